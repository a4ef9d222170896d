"""Family page benchmark: what phones polling `/f/{token}/state` every 2 s cost the backend.

Opens INCIDENTS incidents in a fresh SQLite file (or PostgreSQL with --db), each with a realistic
log (~30 entries: calls to the centre and three contacts, SMS, codes), mints one family link per
contact, then PAGES simulated pages (aiohttp clients over loopback) fetch their state back to back
every 2 s for SECONDS (phases spread, half revalidating with If-None-Match as the real page does)
and report the latency; then the same pages poll back to back for SECONDS / 2 to find the capacity.

    python -m bench.family_poll [--incidents 50] [--pages 200] [--seconds 10] [--db URL]

Last line: one JSON object with pages, requests, needed_per_s, capacity_per_s, state_ms_p50,
state_ms_p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from voip_sos.config import HostPort, HttpConfig
from voip_sos.directory.schema import create_engine, upgrade
from voip_sos.incidents.store import EventRecord, IncidentStore, RequestRecord
from voip_sos.web import DbLinkStore, FamilyPages, family_url, issue_family_link, start_http

POLL_INTERVAL_S = 2.0
CONTACTS = 3


async def seed(incidents: IncidentStore, links: DbLinkStore, n: int, base: str) -> list[str]:
    urls: list[str] = []
    for i in range(n):
        [rec] = await incidents.record(
            [RequestRecord("sos", os.urandom(16), f"10.8.{i >> 8}.{i & 255}", f"u{i:05d}", datetime.now(UTC),
                           lookup={"uid": f"u{i:05d}", "name": f"Subscriber {i}", "language": "zh",
                                   "contacts": CONTACTS})]
        )  # fmt: skip
        inc = rec.incident_id
        assert inc is not None
        log: list[EventRecord] = []
        parties = [("centre", "110")] + [(f"contact:{c}", f"1380000{i:04d}{c}") for c in range(CONTACTS)]
        for party, number in parties:
            cid, now, ok = f"{party}#1", datetime.now(UTC), party == "centre"
            sms = {"sms": f"s{party}", "number": number, "kind": "emergency"}
            log += [
                EventRecord(inc, "call_placed", now, {"call": cid, "number": number, "party": party}),
                EventRecord(inc, "call_ringing", now, {"call": cid, "status": 180}),
                EventRecord(inc, "call_answered", now, {"call": cid, "codec": "PCMU", "dialog": {}}),
                EventRecord(inc, "call_ended", now, {"call": cid, "confirmed": ok,
                                                     "result": "confirmed" if ok else "no_answer"}),
                EventRecord(inc, "sms_sending", now, {**sms, "party": party}),
                EventRecord(inc, "sms_result", now, {**sms, "accepted": True, "text": "x" * 120}),
            ]  # fmt: skip
        log.append(EventRecord(inc, "update_received", datetime.now(UTC), {"door_code": "482913"}))
        await incidents.append_events(log)
        for c in range(CONTACTS):
            urls.append(family_url(base, await issue_family_link(links, inc, f"contact:{c}", 3600)))
    return urls


async def page(
    http: aiohttp.ClientSession, url: str, start: float, until: float, interval_s: float, revalidate: bool,
    out: list[float],
) -> None:  # fmt: skip
    """Poll like the page: on a fixed schedule (start + k * interval), or back to back at interval 0."""
    etag: str | None = None
    k = 0
    while (due := start + k * interval_s) < until and time.perf_counter() < until:
        k += 1
        if interval_s:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        headers = {"If-None-Match": etag} if revalidate and etag else {}
        t0 = time.perf_counter()
        async with http.get(url + "/state", headers=headers) as resp:
            await resp.read()
            assert resp.status in (200, 304), resp.status
            etag = resp.headers.get("ETag")
        out.append((time.perf_counter() - t0) * 1000)


async def load(urls: list[str], pages: int, seconds: float, interval_s: float) -> tuple[list[float], float]:
    samples: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pages)) as http:
        start = time.perf_counter()
        await asyncio.gather(
            *(
                # Pages opened at different moments: phases spread over one interval.
                page(http, urls[i % len(urls)], start + interval_s * i / pages, start + seconds,
                     interval_s, i % 2 == 0, samples)
                for i in range(pages)
            )
        )  # fmt: skip
        return samples, time.perf_counter() - start


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or f"sqlite+aiosqlite:///{Path(tmp) / 'directory.db'}"
        await upgrade(db)
        engine = create_engine(db)
        incidents, links = IncidentStore(engine), DbLinkStore(engine)
        servers = await start_http(HttpConfig(listen=HostPort("127.0.0.1", 0)), links, None, None,
                                   family=FamilyPages(incidents))  # fmt: skip
        try:
            base = f"http://127.0.0.1:{servers.public.port}"
            urls = await seed(incidents, links, args.incidents, base)
            paced, _ = await load(urls, args.pages, args.seconds, POLL_INTERVAL_S)
            flat_out, elapsed = await load(urls, args.pages, args.seconds / 2, 0.0)
        finally:
            await servers.close()
            await incidents.aclose()
            await engine.dispose()
    q = statistics.quantiles(paced, n=100)
    return {
        "pages": args.pages,
        "requests": len(paced),
        "needed_per_s": round(args.pages / POLL_INTERVAL_S, 1),
        "capacity_per_s": round(len(flat_out) / elapsed, 1),
        "state_ms_p50": round(q[49], 2),
        "state_ms_p99": round(q[98], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--incidents", type=int, default=50)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    result = asyncio.run(run(ap.parse_args()))
    print(f"{'pages polling':<24}{result['pages']:>12}")
    print(f"{'requests (paced)':<24}{result['requests']:>12,}")
    print(f"{'requests/s needed':<24}{result['needed_per_s']:>12}  (one per page every 2 s)")
    print(f"{'requests/s capacity':<24}{result['capacity_per_s']:>12}  (back to back, same pages)")
    print(f"{'state p50 ms (paced)':<24}{result['state_ms_p50']:>12}")
    print(f"{'state p99 ms (paced)':<24}{result['state_ms_p99']:>12}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
