"""Voice benchmark: pre-render throughput, scaling, cached and cold SOS-time readiness (issue 5).

1. N distinct subscribers' messages (default English template) into an empty cache, 1 worker;
2. N other subscribers with 2 workers (pools warmed first: start-up is not throughput);
3. all 2N again through the service (cache hits): time of `ensure()` per message;
4. 20 cold-cache SOS renders at once through the service: press -> message ready.

    python -m bench.voice [--count 200] [--cold 20]

Last line: one JSON object with prompts, prompts_per_min, scaling_2_jobs, rtf, model_load_s,
cached_render_ms_p99, cold_ready_ms_p99, rss_mb.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

from voip_sos.config import Config, load_config
from voip_sos.directory.records import Address, Subscriber
from voip_sos.voice.batch import render_batch
from voip_sos.voice.catalog import Catalog
from voip_sos.voice.engines import load_engine
from voip_sos.voice.render import RenderJob, run_job, worker_init
from voip_sos.voice.service import PromptService

TARGET_PROMPTS_PER_MIN = 80
TARGET_SCALING = 1.7
TARGET_CACHED_P99_MS = 5.0

_STREETS = ("Harbour Street", "Oak Road", "Mill Lane", "Station Road", "Garden Road", "Park Avenue")
_NAMES = ("Wang Li", "Maria Gonzalez", "Zhang Wei", "John Smith", "Li Na", "Ahmed Khan", "Chen Jie")


def subscriber(i: int) -> Subscriber:
    address = Address(
        line=f"{i % 997 + 1} {_STREETS[i % len(_STREETS)]}",
        building=str(i % 30 + 1),
        unit=str(i % 6 + 1),
        floor=str(i % 25 + 1),
        room=f"{i % 25 + 1}{i % 10:02d}",
    )
    return Subscriber(
        uid=f"{100000 + i}",
        name=_NAMES[i % len(_NAMES)],
        language="en",
        address=address,
        contacts=(),
        stbs=(),
    )


def make_config(root: Path, sos_jobs: int) -> Config:
    (root / "config.yaml").write_text("{}\n", encoding="utf-8")
    env = {
        "VOIP_SOS_VOICE_CACHE_DIR": str(root / "prompts"),
        "VOIP_SOS_VOICE_SOS_JOBS": str(sos_jobs),
        "VOIP_SOS_VOICE_FALLBACK_DIR": str(Path(__file__).resolve().parents[1] / "audio"),
    }
    return load_config(root / "config.yaml", environ=env)


def warm_pool(catalog: Catalog, jobs: int) -> ProcessPoolExecutor:
    """A pool whose workers have started and loaded the voice (model load is not throughput)."""
    spec = catalog.voices["en"]
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=worker_init, initargs=(0, (spec,), catalog.settings)
    )
    warm = [
        RenderJob(
            f"Warm up {i}.",
            spec,
            catalog.settings,
            catalog.key(f"Warm up {i}.", "en"),
            str(catalog.cache.root),
        )
        for i in range(jobs * 2)
    ]
    wait([pool.submit(run_job, job) for job in warm])
    return pool


def batch(catalog: Catalog, subs: list[Subscriber], jobs: int) -> tuple[float, float]:
    """(messages per minute, real-time factor) for rendering `subs` with a warm pool of `jobs`."""
    pool = warm_pool(catalog, jobs)
    try:
        summary = render_batch(catalog, subs, jobs=jobs, pool=pool)
    finally:
        pool.shutdown(wait=True)
    if summary.failed:
        raise SystemExit(f"{summary.failed} renders failed")
    rate = summary.rendered / summary.wall_s * 60
    rtf = summary.synth_s / summary.audio_s if summary.audio_s else 0.0
    return rate, rtf


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


async def service_phase(
    cfg: Config, cached: list[Subscriber], cold: list[Subscriber]
) -> tuple[list[float], list[float], int]:
    svc = PromptService(cfg)
    await svc.start()
    try:
        hits: list[float] = []
        for sub in cached:
            t0 = time.perf_counter()
            prompt = await svc.ensure(sub, "en")
            hits.append((time.perf_counter() - t0) * 1000)
            assert prompt.source == "piper"
        ready: list[float] = []
        generic = 0

        async def one(sub: Subscriber) -> None:
            nonlocal generic
            pressed = time.perf_counter()
            prompt = await svc.begin(sub, "en").ready()
            ready.append((time.perf_counter() - pressed) * 1000)
            # Slower than voice.render_timeout_s (a burst on a busy machine): the generic message.
            generic += prompt.source != "piper"

        await asyncio.gather(*(one(sub) for sub in cold))
        return hits, ready, generic
    finally:
        await svc.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200, help="subscribers per batch phase (default 200)")
    ap.add_argument("--cold", type=int, default=20, help="simultaneous cold SOS renders (default 20)")
    ap.add_argument("--sos-jobs", type=int, default=2, help="voice.sos_jobs for the service phase")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-voice-") as tmp:
        cfg = make_config(Path(tmp), args.sos_jobs)
        catalog = Catalog(cfg)
        t0 = time.perf_counter()
        load_engine(catalog.voices["en"], catalog.settings)
        model_load_s = time.perf_counter() - t0

        first = [subscriber(i) for i in range(args.count)]
        second = [subscriber(i) for i in range(args.count, 2 * args.count)]
        cold = [subscriber(i) for i in range(2 * args.count, 2 * args.count + args.cold)]
        rate1, rtf1 = batch(catalog, first, 1)
        rate2, rtf2 = batch(catalog, second, 2)
        hits, ready, generic = asyncio.run(service_phase(cfg, first + second, cold))

    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "prompts": 2 * args.count,
        "prompts_per_min": round(rate2, 1),
        "scaling_2_jobs": round(rate2 / rate1, 2),
        "rtf": round(rtf1, 4),
        "model_load_s": round(model_load_s, 3),
        "cached_render_ms_p99": round(p99(hits), 3),
        "cold_ready_ms_p99": round(p99(ready), 1),
        "rss_mb": round(max(self_mb, child_mb), 1),
    }
    rows = [
        ("messages rendered (2 phases)", f"{2 * args.count}", ""),
        ("1 job", f"{rate1:.1f} msg/min", f"rtf {rtf1:.4f}"),
        ("2 jobs", f"{rate2:.1f} msg/min", f"target >= {TARGET_PROMPTS_PER_MIN}, rtf {rtf2:.4f}"),
        ("scaling 2 jobs / 1 job", f"{rate2 / rate1:.2f}", f"target >= {TARGET_SCALING}"),
        ("model load", f"{model_load_s:.3f} s", ""),
        (
            "cached ensure() p50 / p99",
            f"{statistics.median(hits):.3f} / {p99(hits):.3f} ms",
            f"target <= {TARGET_CACHED_P99_MS}",
        ),
        (
            f"{args.cold} cold SOS at once, ready p50 / p99",
            f"{statistics.median(ready):.0f} / {p99(ready):.0f} ms",
            f"sos_jobs {args.sos_jobs}, {generic} timed out to the generic message",
        ),
        ("peak RSS: bench process / largest worker", f"{self_mb:.0f} / {child_mb:.0f} MB", ""),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>22}  {note}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
