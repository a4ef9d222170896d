"""Rendering one text segment: synthesis then the phone-line pipeline, and the worker-process side.

Everything here runs in render worker processes (or in a CLI process); the service's event loop only
submits `RenderJob`s and reads results.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voip_sos.priority import normal_policy
from voip_sos.voice import dsp
from voip_sos.voice.cache import PromptCache
from voip_sos.voice.engines import Engine, SynthesisSettings, load_engine
from voip_sos.voice.models import VoiceSpec

__all__ = ["RenderJob", "RenderResult", "engine_for", "render_pcm", "run_job", "worker_init", "worker_pid"]

logger = logging.getLogger(__name__)

# Lowest CPU priority for background pre-rendering: an SOS render or the SIP/RTP loop always wins.
BACKGROUND_NICE = 19
# SOS-time renders yield to the service process itself: its RTP pacing, SIP timers and SOS receipts
# are real-time work, a render is not (the callee hears the cached opening sentence meanwhile).
SOS_RENDER_NICE = 5


@dataclass(frozen=True, slots=True)
class RenderJob:
    """One segment to render into the cache."""

    text: str
    spec: VoiceSpec
    settings: SynthesisSettings
    key: str
    cache_dir: str
    return_pcm: bool = True
    """False for batch renders: the caller only needs the cache entry, not 300 kB back over a pipe."""


@dataclass(frozen=True, slots=True)
class RenderResult:
    key: str
    pcm: bytes
    """int16 samples, native byte order."""
    size: int
    """Bytes the cache entry takes on disk."""
    synth_s: float
    """Seconds of synthesis (for the real-time factor)."""
    audio_s: float


def render_pcm(engine: Engine, text: str) -> npt.NDArray[np.int16]:
    """Synthesize and run the pipeline: soxr HQ -> 8 kHz, phone band, -19 dBov, -1 dBFS, 5 ms fades, int16."""
    audio = engine.synthesize(text)
    x = dsp.to_8k(audio, engine.rate_hz)
    x = dsp.telephone_band(x)
    return dsp.to_int16(dsp.fade(dsp.level_and_limit(x)))


_ENGINES: dict[tuple[VoiceSpec, SynthesisSettings], Engine] = {}


def engine_for(spec: VoiceSpec, settings: SynthesisSettings) -> Engine:
    """This process's engine for a voice, loaded on first use and kept."""
    engine = _ENGINES.get((spec, settings))
    if engine is None:
        started = time.perf_counter()
        engine = load_engine(spec, settings)
        _ENGINES[(spec, settings)] = engine
        logger.info(
            "voice loaded",
            extra={
                "engine": spec.engine,
                "model": spec.model,
                "load_s": round(time.perf_counter() - started, 3),
            },
        )
    return engine


PARENT_CHECK_S = 1.0


def die_with_parent(parent: int | None = None) -> None:
    """End this process within a second of its parent's end, even after a `kill -9` of the parent.

    A pool worker otherwise outlives a killed service (its siblings keep the pipe it waits on open,
    so it never sees end-of-file), and every crash would leave ~300 MB of voices behind. A thread
    watching the parent id is used rather than PR_SET_PDEATHSIG, which fires when the *thread* that
    started the worker ends, not the process. `parent` is the pid the service had when it made
    the pool: a service killed while this worker was still starting has left already, and the
    worker's own parent id would then be that of init.
    """
    parent = os.getppid() if parent is None else parent
    if os.getppid() != parent:
        os._exit(0)

    never = threading.Event()  # only ever waited on: a sleep that is plainly off any event loop

    def watch() -> None:
        while os.getppid() == parent:
            never.wait(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_init(
    nice: int, preload: tuple[VoiceSpec, ...], settings: SynthesisSettings, parent: int | None = None
) -> None:
    """Process-pool initializer: tie the worker's life to the service (`parent`: its pid), lower
    the priority, load the voices an SOS render will need."""
    die_with_parent(parent)
    with contextlib.suppress(OSError):
        normal_policy()  # spawned by a real-time serve: a render must never run in its class
    if nice:
        # Absolute, not relative: serve itself runs at a raised priority (voip_sos/priority.py),
        # and a render must stay below every process of the emergency path.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, max(nice, os.getpriority(os.PRIO_PROCESS, 0)))
    for spec in preload:
        try:
            engine_for(spec, settings)
        except Exception:
            # Never break the pool: the job that needs this voice fails instead (generic message).
            logger.exception("voice could not be loaded", extra={"model": spec.model})


def worker_pid() -> int:
    """A no-op job: submitting one per worker makes the pool start (and preload) all of them."""
    return os.getpid()


def run_job(job: RenderJob) -> RenderResult:
    """Render one segment and store it in the cache (atomically). Runs in a worker process."""
    engine = engine_for(job.spec, job.settings)
    started = time.perf_counter()
    pcm = render_pcm(engine, job.text)
    synth_s = time.perf_counter() - started
    size = PromptCache(job.cache_dir).put(job.key, pcm)
    data = pcm.tobytes() if job.return_pcm else b""
    return RenderResult(job.key, data, size, synth_s, len(pcm) / dsp.RATE_HZ)
