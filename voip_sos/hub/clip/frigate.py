"""Clips from Frigate (homes that already run it) instead of our own buffer.

Frigate's HTTP API (port 5000 inside the home, or the authenticated port 8971 with a Bearer token):
- `GET /api/<camera>/recordings?after=<ts>&before=<ts>`: the recording segments overlapping that
  time, each with `start_time` and `end_time` (epoch seconds).
- `GET /api/<camera>/start/<start_ts>/end/<end_ts>/clip.mp4`: those recordings joined with
  ffmpeg's concat demuxer and `-c copy`, streamed as fragmented MP4; 400 with a JSON message when
  there are none.
Frigate moves a recording segment (10 s by default) into its database only once it is finished, so
right after a press the last seconds are not there yet: we ask `recordings` until they reach the
press (or `clip.frigate_wait_s` passes, then take what exists). The fragmented MP4 is remuxed into
a plain one with the index up front (`+faststart`), like our own clips, without re-encoding.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp

from voip_sos.hub.cameras import Camera
from voip_sos.hub.clip.cut import ClipFile, ToolError, remux_faststart

__all__ = ["FrigateSource"]

log = logging.getLogger(__name__)

COVER_TOLERANCE_S = 1.0
POLL_S = 1.0
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)


class FrigateSource:
    """Cuts clips by asking Frigate."""

    def __init__(self, base_url: str, token: str, wait_s: float, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.wait_s = wait_s
        self.session = session

    async def _recordings(self, camera: str, after: float, before: float) -> list[dict[str, Any]]:
        url = f"{self.base_url}/api/{camera}/recordings"
        params = {"after": f"{after:.3f}", "before": f"{before:.3f}"}
        async with self.session.get(url, params=params, headers=self.headers, timeout=TIMEOUT) as resp:
            if resp.status != 200:
                raise ToolError(f"Frigate recordings for {camera}: HTTP {resp.status}")
            data = await resp.json(content_type=None)
        if not isinstance(data, list):
            raise ToolError(f"Frigate recordings for {camera}: not a list")
        return [r for r in data if isinstance(r, dict) and "start_time" in r and "end_time" in r]

    async def cut(self, camera: Camera, end_at: float, seconds: float, out: Path) -> ClipFile:
        """The `seconds` before wall time `end_at` from Frigate, as a +faststart MP4 at `out`."""
        name = camera.in_frigate
        start = end_at - seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        try:
            while True:
                recordings = await self._recordings(name, start, end_at)
                covered = max((float(r["end_time"]) for r in recordings), default=None)
                if covered is not None and covered >= end_at - COVER_TOLERANCE_S:
                    break
                if loop.time() >= deadline:
                    break  # take what Frigate has
                await asyncio.sleep(POLL_S)
            if covered is None:
                raise ToolError(f"Frigate has no recordings of {name} in the {seconds:g} s before the press")
            end = min(end_at, covered)
            tmp = out.with_suffix(".frigate.mp4")
            url = f"{self.base_url}/api/{name}/start/{start:.3f}/end/{end:.3f}/clip.mp4"
            async with self.session.get(url, headers=self.headers, timeout=TIMEOUT) as resp:
                if resp.status != 200:
                    detail = (await resp.text())[:200]
                    raise ToolError(f"Frigate clip for {name}: HTTP {resp.status} {detail}")
                with tmp.open("wb") as f:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        await asyncio.to_thread(f.write, chunk)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ToolError(f"Frigate unreachable: {type(exc).__name__}: {exc}") from None
        return await remux_faststart(tmp, out, end)
