"""The backend's clip archive: the `clips` rows, the videos in a `ClipStorage`, and the incident log.

An upload (voip_sos/clips/upload.py) `begin()`s a row, `append()`s bytes as they arrive and, with
the last byte, `complete()`s it: the storage checks size and SHA-256, the row becomes "stored", and
`clip_stored` (camera, part, bytes, duration, video times, gaps) goes into the incident's log -- the
clip's size and duration are on the incident from then on. `purge()` deletes stored clips older than
`http.clip_retention_s` (logging `clip_deleted`) and uploads abandoned for longer than the upload
token lives. Repository functions return plain dataclasses, never rows.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import Executable

from voip_sos.clips.storage import ClipStorage, LocalClipStorage
from voip_sos.clips.tables import clips
from voip_sos.config import HttpConfig
from voip_sos.incidents.recording import EventRecord
from voip_sos.logs import bind
from voip_sos.web.link_store import WriteTransaction

__all__ = [
    "CLIP_DELETED",
    "CLIP_STORED",
    "PARTS",
    "ClipArchive",
    "ClipMeta",
    "ClipRecord",
    "EventSink",
    "IntegrityFailed",
    "open_clip_archive",
]

log = logging.getLogger(__name__)

CLIP_STORED = "clip_stored"
CLIP_DELETED = "clip_deleted"
PARTS = ("recent", "full")
"""`recent`: the last `clip.first_s` before the press, uploaded first; `full`: the whole `clip.clip_s`."""


class EventSink(Protocol):
    """The part of `IncidentStore` the archive writes to."""

    async def append_events(self, events: Sequence[EventRecord]) -> None: ...


class IntegrityFailed(Exception):
    """The finished upload's size or SHA-256 is not what the hub announced; it was discarded."""


@dataclass(frozen=True, slots=True)
class ClipMeta:
    """What the hub says about a clip it uploads (request headers, docs/clip.md)."""

    bytes: int
    sha256: str
    duration_s: float
    video_start: datetime
    video_end: datetime
    gaps: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class ClipRecord:
    id: int
    incident_id: int
    hub_id: str
    camera: str
    part: str
    state: str
    """uploading or stored."""
    storage_key: str
    bytes: int
    sha256: str
    duration_s: float
    video_start: datetime
    video_end: datetime
    gaps: tuple[tuple[float, float], ...]
    created_at: datetime
    stored_at: datetime | None


def _naive(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo is not None else when


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _record(r: Any) -> ClipRecord:
    gaps = json.loads(r.gaps or "[]")
    return ClipRecord(
        id=int(r.id),
        incident_id=int(r.incident_id),
        hub_id=r.hub_id,
        camera=r.camera,
        part=r.part,
        state=r.state,
        storage_key=r.storage_key,
        bytes=int(r.bytes),
        sha256=r.sha256,
        duration_s=float(r.duration_s),
        video_start=_aware(r.video_start),
        video_end=_aware(r.video_end),
        gaps=tuple((float(a), float(b)) for a, b in gaps),
        created_at=_aware(r.created_at),
        stored_at=_aware(r.stored_at) if r.stored_at is not None else None,
    )


def _execute(conn: Connection, *, statement: Executable) -> None:
    conn.execute(statement)


def storage_key(incident_id: int, camera: str, part: str) -> str:
    return f"{incident_id}/{camera}-{part}.mp4"


class ClipArchive:
    """Clips of every incident: rows in the directory's database, videos in `storage`."""

    def __init__(self, engine: AsyncEngine, storage: ClipStorage, events: EventSink | None, *,
                 retention_s: float, upload_ttl_s: float, max_bytes: int,
                 write: WriteTransaction | None = None) -> None:  # fmt: skip
        """`write`: run a write transaction on the incident store's writer (`IncidentStore.write`),
        so `serve` keeps one writer for a SQLite database (as the link store does)."""
        self._engine = engine
        self._write = write
        self.storage = storage
        self._events = events
        self.retention_s = retention_s
        self.upload_ttl_s = upload_ttl_s
        self.max_bytes = max_bytes
        self._locks: dict[str, asyncio.Lock] = {}

    async def _run_write(self, statement: Executable) -> None:
        if self._write is not None:
            await self._write(functools.partial(_execute, statement=statement))
            return
        async with self._engine.begin() as conn:
            await conn.execute(statement)

    def lock(self, incident_id: int, camera: str, part: str) -> asyncio.Lock:
        """One upload of a clip at a time (a hub retrying while its old request still streams)."""
        key = storage_key(incident_id, camera, part)
        lock = self._locks.get(key)
        if lock is None:
            # Forget locks nobody holds, so the table stays as small as the uploads in flight.
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def find(self, incident_id: int, camera: str, part: str) -> ClipRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(clips).where(
                        clips.c.incident_id == incident_id, clips.c.camera == camera, clips.c.part == part
                    )
                )
            ).first()
        return _record(row) if row is not None else None

    async def get(self, clip_id: int) -> ClipRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(clips).where(clips.c.id == clip_id))).first()
        return _record(row) if row is not None else None

    async def for_incident(self, incident_id: int) -> list[ClipRecord]:
        """The incident's stored clips, by camera then part."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(clips)
                    .where(clips.c.incident_id == incident_id, clips.c.state == "stored")
                    .order_by(clips.c.camera, clips.c.part, clips.c.id)
                )
            ).all()
        return [_record(r) for r in rows]

    async def begin(self, incident_id: int, hub_id: str, camera: str, part: str, meta: ClipMeta,
                    now: datetime) -> ClipRecord:  # fmt: skip
        """The row for this upload: created, or reused when the hub resumes the same clip; when the
        hub announces a different clip than the one half uploaded (it cut again), start over."""
        values = {
            "hub_id": hub_id,
            "state": "uploading",
            "bytes": meta.bytes,
            "sha256": meta.sha256,
            "duration_s": meta.duration_s,
            "video_start": _naive(meta.video_start),
            "video_end": _naive(meta.video_end),
            "gaps": json.dumps([list(g) for g in meta.gaps]),
        }
        found = await self.find(incident_id, camera, part)
        if found is None:
            try:
                row = {"incident_id": incident_id, "camera": camera, "part": part, "created_at": _naive(now),
                       "storage_key": storage_key(incident_id, camera, part), **values}  # fmt: skip
                await self._run_write(insert(clips).values(**row))
            except IntegrityError:
                pass  # another backend sharing the database began it a moment ago
            found = await self.find(incident_id, camera, part)
            assert found is not None
            return found
        if found.state == "uploading" and (found.sha256 != meta.sha256 or found.bytes != meta.bytes):
            await self.storage.discard(found.storage_key)
            await self._run_write(
                update(clips).where(clips.c.id == found.id).values(created_at=_naive(now), **values)
            )
            bind(log, incident=incident_id).info(
                "clip upload started over: the hub announced another clip",
                extra={"camera": camera, "part": part},
            )
            again = await self.get(found.id)
            assert again is not None
            return again
        return found

    async def append(self, rec: ClipRecord, offset: int, chunks: AsyncIterator[bytes]) -> int:
        return await self.storage.append(rec.storage_key, offset, chunks, min(rec.bytes, self.max_bytes))

    async def complete(self, rec: ClipRecord, now: datetime) -> ClipRecord:
        """Every byte is there: check it, mark the clip stored, log it on the incident."""
        ilog = bind(log, incident=rec.incident_id)
        stored = await self.storage.finish(rec.storage_key)
        if stored.size != rec.bytes or stored.sha256 != rec.sha256:
            await self.storage.delete(rec.storage_key)
            ilog.error(
                "clip upload corrupt, discarded",
                extra={"camera": rec.camera, "part": rec.part, "bytes": stored.size, "expected": rec.bytes},
            )
            raise IntegrityFailed(f"got {stored.size} bytes with SHA-256 {stored.sha256}")
        await self._run_write(
            update(clips).where(clips.c.id == rec.id).values(state="stored", stored_at=_naive(now))
        )
        detail = {
            "hub": rec.hub_id,
            "camera": rec.camera,
            "part": rec.part,
            "clip": rec.id,
            "bytes": rec.bytes,
            "duration_s": round(rec.duration_s, 3),
            "video_start": rec.video_start.isoformat(),
            "video_end": rec.video_end.isoformat(),
            "gaps": [list(g) for g in rec.gaps],
        }
        if self._events is not None:
            await self._events.append_events([EventRecord(rec.incident_id, CLIP_STORED, now, detail)])
        ilog.info("clip stored", extra=detail)
        done = await self.get(rec.id)
        assert done is not None
        return done

    async def response(self, rec: ClipRecord, headers: dict[str, str]) -> web.StreamResponse | None:
        return await self.storage.response(rec.storage_key, headers)

    async def purge(self, now: datetime) -> int:
        """Delete clips stored longer than the retention and uploads abandoned past the token's
        life; return how many went. A file whose row is gone is never served again either way."""
        stored_before = _naive(now - timedelta(seconds=self.retention_s))
        abandoned_before = _naive(now - timedelta(seconds=self.upload_ttl_s))
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(clips).where(
                        or_(
                            (clips.c.state == "stored") & (clips.c.stored_at < stored_before),
                            (clips.c.state == "uploading") & (clips.c.created_at < abandoned_before),
                        )
                    )
                )
            ).all()
        gone = [_record(r) for r in rows]
        for rec in gone:
            await self.storage.delete(rec.storage_key)
            await self._run_write(delete(clips).where(clips.c.id == rec.id))
            reason = "retention" if rec.state == "stored" else "abandoned upload"
            if self._events is not None and rec.state == "stored":
                await self._events.append_events(
                    [
                        EventRecord(
                            rec.incident_id,
                            CLIP_DELETED,
                            now,
                            {"clip": rec.id, "camera": rec.camera, "part": rec.part, "reason": reason},
                        )
                    ]
                )
            bind(log, incident=rec.incident_id).info(
                "clip deleted",
                extra={"clip": rec.id, "camera": rec.camera, "part": rec.part, "reason": reason},
            )
        return len(gone)


def open_clip_archive(cfg: HttpConfig, engine: AsyncEngine, events: EventSink | None,
                      write: WriteTransaction | None = None) -> ClipArchive:  # fmt: skip
    """The archive `serve` runs: clips under `http.clip_dir`, limits and retention from `http.*`."""
    return ClipArchive(
        engine,
        LocalClipStorage(cfg.clip_dir),
        events,
        retention_s=cfg.clip_retention_s,
        upload_ttl_s=cfg.clip_upload_ttl_s,
        max_bytes=cfg.clip_max_mb * 1_000_000,
        write=write,
    )
