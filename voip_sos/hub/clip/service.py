"""The hub's camera clips (F9): buffers running, and on a press the clips cut and uploaded.

Per camera a `CameraRecorder` keeps the rolling buffer (or, with `clip.source: frigate`, Frigate
does). A press opens a `ClipJob` (jobs.py); for each camera, the `recent` clip (the last
`clip.first_s`) is cut as soon as the segment holding the press is finished and uploaded at once;
the `full` clip (`clip.clip_s`) is cut right after it (so the buffer cannot roll past it) and
uploaded once every camera's recent clip has settled -- the family sees the last seconds first.
Uploads (upload.py) resume where the backend's copy ends and are retried with backoff until
`clip.upload_deadline_s` after the press; they need the incident's upload grant, which comes in the
backend's incident context. Health changes go to the backend as `camera` events, each clip's outcome
as a `clip` event (both on the hub's own MQTT topics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from voip_sos.hub.cameras import Camera
from voip_sos.hub.clip.cut import ToolError, cut_clip
from voip_sos.hub.clip.frigate import FrigateSource
from voip_sos.hub.clip.jobs import ClipItem, ClipJob, load_jobs, match_context, match_press, save_job
from voip_sos.hub.clip.recorder import CameraHealth, CameraRecorder, RecorderSettings
from voip_sos.hub.clip.upload import UploadFailed, UploadRefused, UploadUnauthorized, upload_clip
from voip_sos.hub.config import ClipSection
from voip_sos.hub.topics import EventKind, IncidentContext
from voip_sos.logs import ContextLogger, bind

__all__ = ["ClipService"]

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
FINISHED_MEMORY_S = 3600.0
"""A context for an incident whose clips were all uploaded this recently starts nothing new."""

Publish = Callable[[str, dict[str, object]], None]


class ClipService:
    """Cameras, their buffers and the clip jobs of one hub."""

    def __init__(self, hub_id: str, cfg: ClipSection, publish: Publish | None = None, *,
                 wall: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.hub_id = hub_id
        self.cfg = cfg
        self._publish = publish
        self._wall = wall
        root = Path(cfg.buffer_dir)
        self.outbox = root / "outbox"
        self.cameras: dict[str, Camera] = {c.name: c for c in cfg.cameras}
        settings = RecorderSettings(
            keep_s=cfg.clip_s + cfg.margin_s,
            max_bytes=cfg.max_mb * 1_000_000,
            segment_s=cfg.segment_s,
            transcode_height=cfg.transcode_height,
        )
        self.recorders: dict[str, CameraRecorder] = (
            {
                c.name: CameraRecorder(c, root / "cameras" / c.name, settings, self._on_health, wall=wall)
                for c in cfg.cameras
            }
            if cfg.source == "buffer"
            else {}
        )
        self.frigate: FrigateSource | None = None
        self.jobs: dict[str, ClipJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._grant: dict[str, asyncio.Event] = {}
        self._rejected: dict[str, set[str]] = {}
        self._finished: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self.log = bind(log, hub=hub_id)
        # Test and benchmark hook: called whenever a clip item changes state.
        self.on_item: Callable[[ClipJob, ClipItem], None] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        if self.cfg.source == "frigate":
            assert self.cfg.frigate_url is not None
            self.frigate = FrigateSource(
                self.cfg.frigate_url, self.cfg.frigate_token, self.cfg.frigate_wait_s, self._session
            )
        for rec in self.recorders.values():
            await rec.start()
        jobs, broken = load_jobs(self.outbox)
        for folder in broken:
            self.log.warning("unreadable clip job removed", extra={"folder": folder.name})
            shutil.rmtree(folder, ignore_errors=True)
        for job in jobs:
            if self._wall() > job.press_at + self.cfg.upload_deadline_s:
                self.log.warning(
                    "clip job past its upload deadline dropped", extra={"incident": job.incident}
                )
                shutil.rmtree(self.outbox / job.id, ignore_errors=True)
                continue
            self.log.info("clip job resumed", extra={"incident": job.incident, "job": job.id})
            self._launch(job)
        self.log.info("cameras started", extra={"cameras": list(self.cameras), "source": self.cfg.source})

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for rec in self.recorders.values():
            await rec.close()
        if self._session is not None:
            await self._session.close()

    # -- inputs -------------------------------------------------------------------------------

    def on_press(self) -> ClipJob:
        """The STB's emergency instruction: clips of the time before now (a repeat joins)."""
        now = self._wall()
        job = match_press(list(self.jobs.values()), now)
        if job is not None:
            self._jlog(job).info("press joins the clips of an earlier press")
            return job
        return self._new_job(now, None)

    def on_context(self, ctx: IncidentContext) -> ClipJob | None:
        """The backend's incident context: binds (or, without an instruction, opens) the job and
        hands it the upload grant."""
        now = self._wall()
        job = match_context(list(self.jobs.values()), ctx.incident, now)
        if job is None:
            if now - self._finished.get(ctx.incident, -FINISHED_MEMORY_S) < FINISHED_MEMORY_S:
                return None  # its clips are uploaded already; the backend sent the context again
            job = self._new_job(now, ctx.incident)
        job.incident = ctx.incident
        if ctx.upload_url and ctx.upload_token:
            job.upload_url, job.upload_token = ctx.upload_url.rstrip("/"), ctx.upload_token
        else:
            self._jlog(job).warning("incident context carries no upload grant; clips wait for one")
        save_job(self.outbox / job.id, job)
        self._grant[job.id].set()
        return job

    def _new_job(self, now: float, incident: str | None) -> ClipJob:
        job = ClipJob(id=f"j{int(now * 1000)}", press_at=now, incident=incident)
        for name in self.cameras:
            if self.cfg.first_s < self.cfg.clip_s:
                job.items.append(ClipItem(name, "recent", self.cfg.first_s))
            job.items.append(ClipItem(name, "full", self.cfg.clip_s))
        save_job(self.outbox / job.id, job)
        self._jlog(job).info("clips requested", extra={"cameras": list(self.cameras), "press_at": now})
        self._launch(job)
        return job

    def _launch(self, job: ClipJob) -> None:
        self.jobs[job.id] = job
        self._grant[job.id] = asyncio.Event()
        self._rejected[job.id] = set()
        self._tasks[job.id] = asyncio.create_task(self._run_job(job), name=f"clip-{job.id}")

    # -- the job ------------------------------------------------------------------------------

    def _jlog(self, job: ClipJob) -> ContextLogger:
        return self.log.bind(incident=job.incident or "-", job=job.id)

    def _changed(self, job: ClipJob, item: ClipItem) -> None:
        save_job(self.outbox / job.id, job)
        if self.on_item is not None:
            self.on_item(job, item)
        if item.state in ("uploaded", "failed"):
            clip = item.clip
            self._event(
                EventKind.CLIP,
                incident=job.incident,
                camera=item.camera,
                part=item.part,
                state=item.state,
                bytes=clip.bytes if clip else None,
                duration_s=round(clip.duration_s, 3) if clip else None,
                error=item.error,
                press_at=job.press_at,
            )

    async def _run_job(self, job: ClipJob) -> None:
        jlog = self._jlog(job)
        try:

            async def camera(name: str) -> asyncio.Future[None] | None:
                recent = next((i for i in job.items if i.camera == name and i.part == "recent"), None)
                full = next((i for i in job.items if i.camera == name and i.part == "full"), None)
                upload = None
                if recent is not None:
                    await self._cut(job, recent)
                    upload = asyncio.ensure_future(self._upload(job, recent))
                if full is not None:
                    await self._cut(job, full)
                return upload

            names = sorted({i.camera for i in job.items})
            uploads = [u for u in await asyncio.gather(*(camera(n) for n in names)) if u is not None]
            await asyncio.gather(*uploads)
            await asyncio.gather(*(self._upload(job, i) for i in job.items if i.part == "full"))
        except asyncio.CancelledError:
            raise
        except Exception:
            jlog.exception("clip job failed")
        if job.done:
            jlog.info(
                "clip job finished",
                extra={"clips": {f"{i.camera}/{i.part}": i.state for i in job.items}},
            )
            if job.incident is not None:
                self._finished[job.incident] = self._wall()
            shutil.rmtree(self.outbox / job.id, ignore_errors=True)
            self.jobs.pop(job.id, None)
            self._tasks.pop(job.id, None)
            self._grant.pop(job.id, None)
            self._rejected.pop(job.id, None)

    def _fail(self, job: ClipJob, item: ClipItem, error: str) -> None:
        item.state, item.error = "failed", error
        self._jlog(job).error("clip failed", extra={"camera": item.camera, "part": item.part, "error": error})
        if item.clip is not None:
            Path(item.clip.path).unlink(missing_ok=True)
        self._changed(job, item)

    async def _cut(self, job: ClipJob, item: ClipItem) -> None:
        if item.state != "pending":
            return
        out = self.outbox / job.id / f"{item.camera}-{item.part}.mp4"
        camera = self.cameras.get(item.camera)
        try:
            if camera is None:
                raise ToolError("camera no longer configured")
            if self.frigate is not None:
                clip = await self.frigate.cut(camera, job.press_at, item.seconds, out)
            else:
                rec = self.recorders[item.camera]
                # The segment holding the press ends at the next keyframe: wait for it (bounded),
                # else cut from what exists (a camera down at the press).
                await rec.wait_covered(job.press_at, max(3 * self.cfg.segment_s, 12.0))
                selection = rec.index.select(job.press_at, item.seconds)
                if not selection.segments:
                    raise ToolError("no video buffered before the press")
                with rec.hold(selection.start, selection.end):
                    clip = await cut_clip(selection, rec.folder, out)
        except (ToolError, OSError) as exc:
            self._fail(job, item, str(exc))
            return
        item.clip, item.state = clip, "cut"
        self._jlog(job).info(
            "clip cut",
            extra={
                "camera": item.camera,
                "part": item.part,
                "bytes": clip.bytes,
                "duration_s": round(clip.duration_s, 2),
                "end_after_press_s": round(clip.end - job.press_at, 2),
                "gaps": len(clip.gaps),
            },
        )
        self._changed(job, item)

    async def _wait_grant(self, job: ClipJob, deadline: float) -> tuple[str, str] | None:
        while True:
            url, token = job.upload_url, job.upload_token
            if url and token and token not in self._rejected[job.id]:
                return url, token
            remaining = deadline - self._wall()
            if remaining <= 0:
                return None
            event = self._grant[job.id]
            event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 60.0)):
                    await event.wait()

    async def _upload(self, job: ClipJob, item: ClipItem) -> None:
        if item.state != "cut" or item.clip is None:
            return
        if not await asyncio.to_thread(os.path.exists, item.clip.path):
            self._fail(job, item, "the cut clip is gone from the outbox")
            return
        assert self._session is not None
        jlog = self._jlog(job).bind(camera=item.camera, part=item.part)
        deadline = job.press_at + self.cfg.upload_deadline_s
        backoff = FIRST_BACKOFF_S
        attempts = 0
        while True:
            grant = await self._wait_grant(job, deadline)
            if grant is None:
                why = "no upload grant from the backend" if not job.upload_token else "upload deadline passed"
                self._fail(job, item, f"{why} ({attempts} attempts)")
                return
            url, token = grant
            attempts += 1
            try:
                result = await upload_clip(
                    self._session, f"{url}/{item.camera}/{item.part}", token, item.clip
                )
            except UploadUnauthorized as exc:
                jlog.warning("upload token refused; waiting for a new context", extra={"error": str(exc)})
                self._rejected[job.id].add(token)
                continue
            except UploadRefused as exc:
                self._fail(job, item, str(exc))
                return
            except UploadFailed as exc:
                wait = min(backoff, max(0.0, deadline - self._wall()))
                jlog.warning(
                    "clip upload failed, retrying",
                    extra={"error": str(exc), "attempt": attempts, "retry_in_s": round(wait, 2)},
                )
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                if self._wall() >= deadline:
                    self._fail(job, item, f"upload deadline passed ({attempts} attempts): {exc}")
                    return
                continue
            item.state = "uploaded"
            os.unlink(item.clip.path)
            jlog.info(
                "clip uploaded",
                extra={"bytes": item.clip.bytes, "attempts": attempts, "clip": result.get("clip")},
            )
            self._changed(job, item)
            return

    # -- health -------------------------------------------------------------------------------

    def _event(self, kind: str, **data: object) -> None:
        if self._publish is not None:
            self._publish(kind, data)

    def _on_health(self, health: CameraHealth) -> None:
        self._event(EventKind.CAMERA, **health.to_event())

    def health(self) -> list[CameraHealth]:
        """Every camera's current state (Frigate cameras are Frigate's to watch)."""
        return [rec.health for rec in self.recorders.values()]
