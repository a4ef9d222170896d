"""One camera's rolling buffer: an ffmpeg process pulling RTSP into segments, kept running.

The recorder starts ffmpeg (voip_sos/hub/clip/ffmpeg.py), reads the finished segments from its
stdout, adds each to the camera's `SegmentIndex` (persisted as one JSON line per segment, so a hub
restart keeps the buffer), deletes what is older than `clip_s + margin_s` or over `max_mb`, and
reports its health on every change. When ffmpeg exits (camera dropped, network down, socket timeout)
or stops producing segments, it is restarted with backoff (1 s doubling to 30 s); the time without
video is a gap that the next segment reveals. A segment the dying ffmpeg never listed is probed and
kept: the clip gets the video up to the moment the camera dropped.

Camera mode `auto` probes the stream's codec (ffprobe, one short RTSP session) at the first
connection and after a run that failed early: H.264 is copied, anything else is re-encoded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from voip_sos.hub.cameras import Camera
from voip_sos.hub.clip.cut import ToolError, probe_duration, run_tool
from voip_sos.hub.clip.ffmpeg import probe_codec_args, record_args
from voip_sos.hub.clip.segments import Gap, Segment, SegmentIndex
from voip_sos.logs import bind

__all__ = ["CameraHealth", "CameraRecorder", "RecorderSettings"]

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_RUN_S = 30.0
"""A run that lasted this long resets the backoff."""
PROBE_TIMEOUT_S = 15.0
INDEX_FILE = "index.jsonl"


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    """What the recorder needs from `clip.*` (kept apart so tests and the benchmark build one)."""

    keep_s: float
    """clip_s + margin_s: older segments are deleted."""
    max_bytes: int
    segment_s: float = 2.0
    transcode_height: int = 360
    stall_s: float = 0.0
    """No segment for this long ends the run; 0 = max(4 segments, 30 s)."""

    @property
    def stall_timeout_s(self) -> float:
        return self.stall_s or max(4 * self.segment_s, 30.0)


@dataclass(frozen=True, slots=True)
class CameraHealth:
    """A camera's state as reported to the backend (MQTT event `camera`)."""

    camera: str
    state: str
    """starting, recording, reconnecting or stopped."""
    since: float
    """Wall clock of the change."""
    error: str | None = None
    codec: str | None = None
    transcoding: bool = False
    buffered_s: float = 0.0
    bytes: int = 0
    restarts: int = 0
    gap: Gap | None = None
    """The gap the reconnection just closed."""

    def to_event(self) -> dict[str, object]:
        return {
            "camera": self.camera,
            "state": self.state,
            "since": round(self.since, 3),
            "error": self.error,
            "codec": self.codec,
            "transcoding": self.transcoding,
            "buffered_s": round(self.buffered_s, 1),
            "bytes": self.bytes,
            "restarts": self.restarts,
            "gap": None if self.gap is None else {"start": self.gap.start, "end": self.gap.end},
        }


@dataclass(slots=True)
class _Run:
    name: str
    listed: set[str] = field(default_factory=set)
    segments: int = 0


class CameraRecorder:
    """Keeps one camera's buffer; `wait_covered()`, `hold()` and `index` serve the clip cutter."""

    def __init__(self, camera: Camera, folder: Path, settings: RecorderSettings,
                 on_health: Callable[[CameraHealth], None] | None = None, *,
                 wall: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.camera = camera
        self.folder = folder
        self.settings = settings
        self._on_health = on_health
        self._wall = wall
        self.index = SegmentIndex()
        self.gaps: list[Gap] = []
        """Gaps seen while running (also those pruned from the buffer since), newest last."""
        self.health = CameraHealth(camera.name, "starting", wall())
        self._holds: dict[int, tuple[float, float]] = {}
        self._next_hold = 0
        self._added = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._codec: str | None = None
        self._index_lines = 0
        self._restarts = 0
        self.log = bind(log, camera=camera.name)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        await self._load()
        self._task = asyncio.create_task(self._run(), name=f"camera-{self.camera.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._stop_ffmpeg()
        self._set_health("stopped")

    # -- what the clip cutter uses -------------------------------------------------------------

    async def wait_covered(self, at: float, timeout_s: float) -> bool:
        """Wait until a finished segment reaches wall time `at` (or `timeout_s` passes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.index.covers(at):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._added.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._added.wait()
        return True

    @contextlib.contextmanager
    def hold(self, start: float, end: float) -> Iterator[None]:
        """Keep the segments in [start, end] from being deleted while a clip is cut from them."""
        self._next_hold += 1
        key = self._next_hold
        self._holds[key] = (start, end)
        try:
            yield
        finally:
            del self._holds[key]

    # -- the index on disk ---------------------------------------------------------------------

    async def _load(self) -> None:
        """Take back the buffer a previous run of the hub left (index file + unlisted segments)."""
        path = self.folder / INDEX_FILE
        segments: dict[str, Segment] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    seg = Segment.from_json(line)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a power cut
                if (self.folder / seg.name).exists():
                    segments[seg.name] = seg
        self.index = SegmentIndex(segments.values())
        await self._recover_unlisted(set(segments))
        self._prune()
        self._rewrite_index()

    def _append_index(self, seg: Segment) -> None:
        with (self.folder / INDEX_FILE).open("a", encoding="utf-8") as f:
            f.write(seg.to_json() + "\n")
        self._index_lines += 1

    def _rewrite_index(self) -> None:
        path = self.folder / INDEX_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(s.to_json() + "\n" for s in self.index.segments), encoding="utf-8")
        os.replace(tmp, path)
        self._index_lines = len(self.index)

    async def _recover_unlisted(self, known: set[str]) -> None:
        """Segments on disk that no list line announced (ffmpeg killed mid-segment): keep what plays."""
        for path in sorted(self.folder.glob("*.ts"), key=lambda p: p.stat().st_mtime):
            if path.name in known:
                continue
            try:
                duration = await probe_duration(path)
            except ToolError:
                duration = 0.0
            if duration <= 0.0:
                path.unlink(missing_ok=True)
                continue
            st = path.stat()
            seg = Segment(path.name, path.name.split("-", 1)[0], st.st_mtime, duration, st.st_size)
            self._add(seg)
            self.log.info(
                "unlisted segment kept", extra={"segment": path.name, "duration_s": round(duration, 2)}
            )

    def _add(self, seg: Segment) -> Gap | None:
        gap = self.index.add(seg)
        if gap is not None:
            self.gaps.append(gap)
            self.log.warning(
                "gap in the buffer", extra={"gap_s": round(gap.seconds, 1), "from": gap.start, "to": gap.end}
            )
        self._append_index(seg)
        self._added.set()
        return gap

    def _prune(self) -> None:
        gone = self.index.prune(
            self._wall(), self.settings.keep_s, self.settings.max_bytes, self._holds.values()
        )
        for seg in gone:
            (self.folder / seg.name).unlink(missing_ok=True)
        oldest = self.index.segments[0].start if len(self.index) else self._wall()
        self.gaps = [g for g in self.gaps if g.end >= oldest]
        if self._index_lines > 2 * len(self.index) + 100:
            self._rewrite_index()

    # -- running ffmpeg ------------------------------------------------------------------------

    def _set_health(self, state: str, *, error: str | None = None, gap: Gap | None = None) -> None:
        changed = state != self.health.state or error != self.health.error or gap is not None
        self.health = CameraHealth(
            self.camera.name,
            state,
            self._wall() if changed else self.health.since,
            error=error,
            codec=self._codec,
            transcoding=self._transcoding(),
            buffered_s=self.index.buffered_s,
            bytes=self.index.total_bytes,
            restarts=self._restarts,
            gap=gap,
        )
        if changed and self._on_health is not None:
            self._on_health(self.health)

    def _transcoding(self) -> bool:
        if self.camera.mode == "transcode":
            return True
        if self.camera.mode == "copy":
            return False
        return self._codec is not None and self._codec != "h264"

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF_S
        while True:
            started = loop.time()
            run = _Run(f"r{int(self._wall() * 1000)}")
            try:
                if self.camera.mode == "auto" and self._codec is None:
                    await self._probe()
                error = await self._run_ffmpeg(run)
            except ToolError as exc:
                error = self.camera.redact(str(exc))
            finally:
                await self._stop_ffmpeg()
            await self._recover_unlisted({s.name for s in self.index.segments})
            lasted = loop.time() - started
            if run.segments == 0 and lasted < STABLE_RUN_S:
                self._codec = None  # failed at once: the camera may have changed; probe again
            if lasted >= STABLE_RUN_S and run.segments:
                backoff = FIRST_BACKOFF_S
            self._restarts += 1
            self.log.warning(
                "camera lost, reconnecting",
                extra={"error": error, "retry_in_s": backoff, "segments": run.segments},
            )
            self._set_health("reconnecting", error=error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _probe(self) -> None:
        assert self.camera.url is not None
        out = await run_tool(probe_codec_args(self.camera.source_url()), PROBE_TIMEOUT_S)
        codec = out.decode("utf-8", "replace").strip().splitlines()
        if not codec:
            raise ToolError("the camera's stream has no video")
        self._codec = codec[0].strip()
        self.log.info("camera codec", extra={"codec": self._codec, "transcoding": self._transcoding()})

    async def _run_ffmpeg(self, run: _Run) -> str:
        """Run one ffmpeg until it ends; return why it ended."""
        assert self.camera.url is not None
        args = record_args(
            self.camera.source_url(),
            self.folder / f"{run.name}-%06d.ts",
            segment_s=self.settings.segment_s,
            transcode_height=self.settings.transcode_height if self._transcoding() else None,
        )
        self._proc = proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        stderr_tail: collections.deque[str] = collections.deque(maxlen=4)
        drain = asyncio.create_task(self._drain(proc.stderr, stderr_tail))
        try:
            while True:
                try:
                    async with asyncio.timeout(self.settings.stall_timeout_s):
                        line = await proc.stdout.readline()
                except TimeoutError:
                    return f"no video for {self.settings.stall_timeout_s:g} s"
                if not line:
                    break
                self._on_list_line(run, line.decode("utf-8", "replace").strip())
            rc = await proc.wait()
            await asyncio.wait({drain}, timeout=2.0)
            detail = " | ".join(stderr_tail) or "stream ended"
            return f"ffmpeg exited with {rc}: {detail}"
        finally:
            drain.cancel()

    async def _drain(self, stream: asyncio.StreamReader, tail: collections.deque[str]) -> None:
        while line := await stream.readline():
            # ffmpeg prints the input URL in some errors: never log the camera's password.
            text = self.camera.redact(line.decode("utf-8", "replace").strip())
            tail.append(text)
            self.log.debug("ffmpeg", extra={"line": text})

    def _on_list_line(self, run: _Run, line: str) -> None:
        parts = line.rsplit(",", 2)
        if len(parts) != 3:
            self.log.warning("unexpected segment list line", extra={"line": line[:200]})
            return
        name, start_s, end_s = parts
        try:
            duration = float(end_s) - float(start_s)
        except ValueError:
            self.log.warning("unexpected segment list line", extra={"line": line[:200]})
            return
        path = self.folder / Path(name).name
        try:
            size = path.stat().st_size
        except OSError:
            return
        run.listed.add(path.name)
        run.segments += 1
        gap = self._add(Segment(path.name, run.name, self._wall(), max(duration, 0.0), size))
        self._prune()
        if run.segments == 1 or gap is not None or self.health.state != "recording":
            self._set_health("recording", gap=gap)

    async def _stop_ffmpeg(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        # SIGTERM first: ffmpeg then finishes and lists its current segment.
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(3.0):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
