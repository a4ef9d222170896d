"""Camera clip benchmark (issue 9): 4 cameras buffered by the hub, then a press.

The cameras are GStreamer's RTSP server (tests/clip/rtsp_camera.py under Debian's python3) playing
a pre-encoded H.264 file (640x360, 15 fps, a keyframe every second, ~500 kbit/s: a typical
sub-stream) on each mount, so no live encoder competes for the CPU. The hub is a real
`voip-sos hub run` process (its ffmpeg children buffering the cameras); the backend (HTTP upload
endpoint, clip archive on SQLite, the MQTT link on a private Mosquitto) runs in this process.

1. The hub buffers the 4 cameras for `--buffer-s` (120 s). Its CPU while buffering -- the hub
   process and every ffmpeg it runs, from /proc, after the cameras are up -- is
   `cpu_pct_of_one_core`.
2. The press: the STB's instruction to the hub over UDP and, at the same moment, the backend's
   incident context with the upload grant over MQTT (what serve's hub bridge sends).
3. Timed from the press until the backend has stored every camera's last-30-seconds clip
   (`press_to_last30s_uploaded_s`) and every full clip (`press_to_full_clip_uploaded_s`), seen at
   the moment the archive logs `clip_stored`. `clip_duration_s`: the full clips' mean duration.

    python -m bench.clip [--cameras 4] [--buffer-s 120] [--clip-s 120] [--codec h264|h265] [--size 640x360]

`--codec h265` serves H.265 files instead (the hub re-encodes them to H.264 at 360 lines: the
transcoding cost); `--size` sets the cameras' picture.
Last line: one JSON object. Targets: cpu_pct_of_one_core < 5 (4 cameras, H.264),
press_to_last30s_uploaded_s <= 5 (loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.clip.camera import RtspCamera
from tests.clip.conftest import make_site
from tests.hub.broker import free_port, mosquitto
from voip_sos.clips.archive import CLIP_STORED
from voip_sos.clips.tokens import ClipGrants
from voip_sos.config import HostPort
from voip_sos.hub.aio import open_hub_client
from voip_sos.hub.link import HubLink
from voip_sos.hub.topics import IncidentContext
from voip_sos.incidents.recording import EventRecord
from voip_sos.incidents.store import IncidentStore

ROOT = Path(__file__).resolve().parent.parent
STB_KEY = bytes(range(32))
TARGET_CPU_PCT = 5.0
TARGET_LAST30_S = 5.0
TICKS = os.sysconf("SC_CLK_TCK")


def encode_source(path: Path, seconds: float, codec: str, size: str) -> None:
    """The file the cameras play: a moving test picture, a keyframe every second."""
    enc = (
        ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main"]
        if codec == "h264"
        else ["-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1", "-x265-params", "log-level=error"]
    )
    # Main profile with B-frames (x264's default): harder than most cameras' streams, which have none.
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=15",
         "-t", f"{seconds:g}", *enc, "-b:v", "500k", "-maxrate", "600k", "-bufsize", "1000k",
         "-g", "15", "-keyint_min", "15", "-pix_fmt", "yuv420p", "-an", str(path)],
        check=True, timeout=600,
    )  # fmt: skip


def tree_cpu_ticks(root: int) -> tuple[int, int]:
    """CPU ticks (user + system) used so far by `root` and its live descendants; how many processes."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    members = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    return sum(ticks.get(p, 0) for p in members), len(members)


class StoredClock:
    """Wraps the incident store: notes when each `clip_stored` is logged (the clip is complete)."""

    def __init__(self) -> None:
        self.store: IncidentStore | None = None
        self.stored_at: dict[tuple[str, str], float] = {}
        self.details: dict[tuple[str, str], dict[str, Any]] = {}

    def wrap(self, store: IncidentStore) -> StoredClock:
        self.store = store
        return self

    async def append_events(self, events: Sequence[EventRecord]) -> None:
        now = time.time()
        for e in events:
            if e.kind == CLIP_STORED:
                key = (str(e.detail["camera"]), str(e.detail["part"]))
                self.stored_at[key] = now
                self.details[key] = dict(e.detail)
        assert self.store is not None
        await self.store.append_events(events)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [f"cam{i + 1}" for i in range(args.cameras)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-clip-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / f"source-{args.codec}.mp4"
        t = time.monotonic()
        encode_source(source, args.buffer_s + 60, args.codec, args.size)
        print(
            f"source encoded in {time.monotonic() - t:.1f} s ({source.stat().st_size / 1e6:.1f} MB)",
            flush=True,
        )
        spec = f"{source}:h265" if args.codec == "h265" else str(source)
        camera = RtspCamera(files={n: spec for n in names})
        udp = free_port()
        with mosquitto() as mqtt_port, camera:
            await camera.ready()
            clock = StoredClock()
            async with make_site(
                f"sqlite+aiosqlite:///{tmp / 'directory.db'}", tmp, events=clock.wrap
            ) as site:
                hub_yaml = tmp / "hub.yaml"
                hub_yaml.write_text(yaml.safe_dump({
                    "hub": {"id": "hub-bench", "listen": f"127.0.0.1:{udp}", "stb_key": STB_KEY.hex(),
                            "stb_ip": "127.0.0.1", "state_file": str(tmp / "hub-state.json")},
                    "link": {"broker": f"127.0.0.1:{mqtt_port}"},
                    "lock": {"kind": "none"},
                    "clip": {"cameras": [{"name": n, "url": camera.url(n)} for n in names],
                             "clip_s": args.clip_s, "first_s": 30, "buffer_dir": str(tmp / "buffer")},
                    "log": {"level": "warning"},
                }))  # fmt: skip
                with (tmp / "hub.log").open("wb") as hub_log:
                    hub = await asyncio.create_subprocess_exec(
                        str(ROOT / ".venv" / "bin" / "voip-sos"), "hub", "run", "--hub-config", str(hub_yaml),
                        stdin=subprocess.DEVNULL, stdout=hub_log, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                    try:
                        return await measure(args, names, site, clock, hub, udp, mqtt_port, tmp, load_before)
                    finally:
                        hub.terminate()  # by its PID; it stops its ffmpeg children itself
                        try:
                            await asyncio.wait_for(hub.wait(), 15)
                        except TimeoutError:
                            hub.kill()
                            await hub.wait()


async def measure(args: argparse.Namespace, names: list[str], site: Any, clock: StoredClock,
                  hub: asyncio.subprocess.Process, udp: int, mqtt_port: int, tmp: Path,
                  load_before: tuple[float, float, float]) -> dict[str, Any]:  # fmt: skip
    buffers = [tmp / "buffer" / "cameras" / n for n in names]
    deadline = time.monotonic() + 30
    while not all(len(list(b.glob("*.ts"))) >= 2 for b in buffers):  # every camera has written segments
        if hub.returncode is not None or time.monotonic() > deadline:
            raise SystemExit(f"cameras not buffering: {(tmp / 'hub.log').read_text()[-2000:]}")
        await asyncio.sleep(0.5)
    started = time.monotonic()
    # Settle (probes, first segments) for 10 s, then measure the rest of the buffering time.
    await asyncio.sleep(10)
    ticks0, procs = tree_cpu_ticks(hub.pid)
    t0 = time.monotonic()
    await asyncio.sleep(max(1.0, args.buffer_s - (time.monotonic() - started)))
    ticks1, _ = tree_cpu_ticks(hub.pid)
    cpu_pct = 100.0 * (ticks1 - ticks0) / TICKS / (time.monotonic() - t0)
    print(f"buffering: {procs} processes (hub + ffmpeg), {cpu_pct:.2f} % of one core", flush=True)

    incident = await site.open_incident(1)
    async with HubLink(HostPort("127.0.0.1", mqtt_port), client_id="bench-clip-backend") as link:
        ctx = await ClipGrants(site.links, site.base, 3600)(
            IncidentContext(str(incident), "c00001", "1 Road", "+8613800000001"), "hub-bench"
        )
        stb = await open_hub_client(STB_KEY, ("127.0.0.1", udp), give_up_s=10)
        try:
            press_at = time.time()
            press = asyncio.create_task(stb.request_codes())
            await link.send_context("hub-bench", ctx)
            await asyncio.wait_for(press, 15)
        finally:
            stb.close()
        deadline = time.monotonic() + 120
        while len(clock.stored_at) < 2 * len(names):
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"clips missing: {sorted(clock.stored_at)}; {(tmp / 'hub.log').read_text()[-2000:]}"
                )
            await asyncio.sleep(0.05)

    recent = [clock.stored_at[(n, "recent")] - press_at for n in names]
    full = [clock.stored_at[(n, "full")] - press_at for n in names]
    print("\n| camera | last 30 s: bytes | s | stored after press | full: bytes | s | stored after press |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        cells = []
        for part in ("recent", "full"):
            d = clock.details[(n, part)]
            cells.append(
                f"{d['bytes']} | {d['duration_s']:.1f} | {clock.stored_at[(n, part)] - press_at:.2f} s"
            )
        print(f"| {n} | {' | '.join(cells)} |")
    durations = [float(clock.details[(n, "full")]["duration_s"]) for n in names]
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores, shared machine)")
    return {
        "cameras": len(names),
        "codec": args.codec,
        "size": args.size,
        "buffer_s": args.buffer_s,
        "cpu_pct_of_one_core": round(cpu_pct, 2),
        "press_to_last30s_uploaded_s": round(max(recent), 3),
        "press_to_full_clip_uploaded_s": round(max(full), 3),
        "clip_duration_s": round(sum(durations) / len(durations), 2),
        "clip_s": args.clip_s,
        "load_avg_1m": [round(load_before[0], 2), round(load_after[0], 2)],
        "targets_met": cpu_pct < TARGET_CPU_PCT and max(recent) <= TARGET_LAST30_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--buffer-s", type=float, default=120.0)
    parser.add_argument("--clip-s", type=float, default=120.0)
    parser.add_argument("--codec", choices=("h264", "h265"), default="h264")
    parser.add_argument("--size", default="640x360", help="the cameras' picture (WxH)")
    args = parser.parse_args()
    if args.clip_s <= 30:
        parser.error("--clip-s must be longer than the 30 s clip uploaded first")
    result = asyncio.run(run(args))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
