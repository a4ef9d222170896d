"""Durable record of every SOS request and every step of every incident (the audit log).

`record()` commits a batch of authenticated requests in one transaction (group commit: a surge of
presses costs one commit, not hundreds) and returns, for each, the incident it belongs to. The SQL
is in `recording.py`; this class picks how it runs: on SQLite in one dedicated thread with its own
connection (one thread hop per batch, `BEGIN IMMEDIATE` so the batch holds the write lock from its
first read), on PostgreSQL on the shared async engine. Reads use the async engine. Everything
returned is a plain dataclass.

The incidents runner appends its own steps (calls, SMS, confirmations) with `append_events()`.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from voip_sos.incidents.recording import EventRecord, Recorded, Recorder, RequestRecord, _aware
from voip_sos.incidents.tables import incident_events, incidents

__all__ = [
    "EventRecord",
    "Incident",
    "IncidentEvent",
    "IncidentStore",
    "Recorded",
    "RequestRecord",
]

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    stb_ip: str
    uid: str
    test: bool
    state: str
    opened_at: datetime
    closed_at: datetime | None
    close_reason: str | None


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    id: int
    incident_id: int
    at: datetime
    kind: str
    request_id: str | None
    detail: dict[str, Any]


def _sqlite_writer(database: str) -> Engine:
    engine = create_engine(f"sqlite:///{database}", connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, say when transactions begin (so BEGIN IMMEDIATE works).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class IncidentStore:
    """Incidents and their event log in the directory's database (shares its engine)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._recorder = Recorder(engine.dialect.name)
        self._writer: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        database = engine.url.database
        self._sqlite_file = (
            database if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:") else None
        )

    async def aclose(self) -> None:
        """Release the SQLite writer thread and connection (the shared engine is the directory's)."""
        if self._thread is not None and self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._writer.dispose)
            self._thread.shutdown(wait=True)
            self._thread = None
            self._writer = None

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        if self._sqlite_file is not None and self._writer is None:
            self._writer = _sqlite_writer(self._sqlite_file)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="incident-writer")
        if self._writer is not None and self._thread is not None:
            writer = self._writer

            def run() -> T:
                with writer.begin() as conn:
                    return fn(conn)

            return await asyncio.get_running_loop().run_in_executor(self._thread, run)
        async with self._engine.begin() as conn:
            return await conn.run_sync(fn)

    # -- writing -------------------------------------------------------------------------------

    async def record(
        self, items: Sequence[RequestRecord], events: Sequence[EventRecord] = ()
    ) -> list[Recorded]:
        """Record requests (and pending log entries) in one transaction; one result per request."""
        return await self._write(lambda conn: self._recorder.record(conn, items, events))

    async def append_events(self, events: Sequence[EventRecord]) -> None:
        """Append steps to incidents' logs (the log is append-only: nothing is ever updated)."""
        if events:
            await self._write(lambda conn: self._recorder.append(conn, events))

    async def close(
        self,
        incident_id: int,
        at: datetime,
        reason: str,
        state: str = "closed",
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Close an open incident (logging `incident_closed` with `detail`); False if it was not open."""
        return await self._write(
            lambda conn: self._recorder.close(conn, incident_id, at, reason, state, detail)
        )

    # -- reading -------------------------------------------------------------------------------

    async def get(self, incident_id: int) -> Incident | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(incidents).where(incidents.c.id == incident_id))).first()
        return _incident(row) if row is not None else None

    async def list(self, *, open_only: bool = False, limit: int = 100) -> list[Incident]:
        """Newest first."""
        q = select(incidents).order_by(incidents.c.id.desc()).limit(limit)
        if open_only:
            q = q.where(incidents.c.closed_at.is_(None))
        async with self._engine.connect() as conn:
            return [_incident(r) for r in await conn.execute(q)]

    async def count(self, *, open_only: bool = False) -> int:
        q = select(func.count()).select_from(incidents)
        if open_only:
            q = q.where(incidents.c.closed_at.is_(None))
        async with self._engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def events(self, incident_id: int) -> builtins.list[IncidentEvent]:
        """The incident's log in the order it was written."""
        q = (
            select(incident_events)
            .where(incident_events.c.incident_id == incident_id)
            .order_by(incident_events.c.id)
        )
        async with self._engine.connect() as conn:
            return [
                IncidentEvent(
                    r.id, r.incident_id, _aware(r.at) or r.at, r.kind, r.request_id, json.loads(r.detail)
                )
                for r in await conn.execute(q)
            ]


def _incident(r: Any) -> Incident:
    return Incident(
        id=r.id,
        stb_ip=r.stb_ip,
        uid=r.uid,
        test=bool(r.test),
        state=r.state,
        opened_at=_aware(r.opened_at) or r.opened_at,
        closed_at=_aware(r.closed_at),
        close_reason=r.close_reason,
    )
