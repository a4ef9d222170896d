"""A stand-in for Frigate's HTTP API (Frigate itself cannot be installed here), over real HTTP.

It speaks the two endpoints the hub uses, as Frigate's own code does (frigate/api/media.py):
- `GET /api/<camera>/recordings?after=&before=` -> JSON list of recording segments overlapping the
  range (`id`, `start_time`, `end_time`, `segment_size`, `motion`, `objects`, `duration`). Only the
  segments that are "finished" appear: the double's `covered_until` moves like Frigate's cache being
  flushed to the database, 10 s at a time.
- `GET /api/<camera>/start/<start_ts>/end/<end_ts>/clip.mp4` -> a fragmented MP4
  (`frag_keyframe+empty_moov`, streamed without a Content-Length, like Frigate's StreamingResponse)
  covering the range, made on the fly by ffmpeg; 400 with Frigate's JSON message when the camera
  has no recordings.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

SEGMENT_S = 10.0


@dataclass
class FrigateDouble:
    cameras: set[str]
    covered_until: float
    """Wall clock up to which recordings are in Frigate's database."""
    token: str = ""
    recording_queries: list[tuple[str, float, float]] = field(default_factory=list)
    clip_requests: list[tuple[str, float, float]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/{camera}/recordings", self._recordings)
        app.router.add_get("/api/{camera}/start/{start}/end/{end}/clip.mp4", self._clip)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(next(a for a in self.runner.addresses if isinstance(a, tuple))[1])
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _authorized(self, request: web.Request) -> bool:
        return not self.token or request.headers.get("Authorization") == f"Bearer {self.token}"

    async def _recordings(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"success": False, "message": "Unauthorized"}, status=401)
        camera = request.match_info["camera"]
        after, before = float(request.query["after"]), float(request.query["before"])
        self.recording_queries.append((camera, after, before))
        if camera not in self.cameras:
            return web.json_response([])
        rows = []
        start = after - (after % SEGMENT_S)
        while start < min(before, self.covered_until):
            end = min(start + SEGMENT_S, self.covered_until)
            rows.append({"id": f"{start:.0f}-x", "start_time": start, "end_time": end,
                         "segment_size": 1.2, "motion": 0, "objects": 0, "duration": end - start})  # fmt: skip
            start += SEGMENT_S
        return web.json_response(rows)

    async def _clip(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"success": False, "message": "Unauthorized"}, status=401)
        camera = request.match_info["camera"]
        start, end = float(request.match_info["start"]), float(request.match_info["end"])
        self.clip_requests.append((camera, start, end))
        if camera not in self.cameras or start >= self.covered_until:
            return web.json_response(
                {"success": False, "message": "No recordings found for the specified time range"}, status=400
            )
        seconds = max(1.0, min(end, self.covered_until) - start)
        proc = await asyncio.create_subprocess_exec(
            "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", f"{seconds:.3f}",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-pix_fmt", "yuv420p",
            "-movflags", "frag_keyframe+empty_moov", "-f", "mp4", "pipe:",
            stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdout is not None
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        await response.prepare(request)
        while chunk := await proc.stdout.read(8192):
            await response.write(chunk)
        await proc.wait()
        await response.write_eof()
        return response
