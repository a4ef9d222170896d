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
import contextvars
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, create_engine, event, func, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from voip_sos.incidents.recording import (
    SQLITE_APPEND,
    EventRecord,
    Recorded,
    Recorder,
    RequestRecord,
    _aware,
    _naive,
    sqlite_append_payload,
)
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
LOCK_POLL_S = 0.0005


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


class _Locked(Exception):
    """SQLite's write lock is taken, and this caller may not wait for it where it is."""


# False while an inline store writes on its event loop's thread: that thread must not sleep
# waiting for another process's lock; the write is handed to the writer thread instead.
_MAY_WAIT: contextvars.ContextVar[bool] = contextvars.ContextVar("sqlite_may_wait", default=True)


def _while_locked(attempt: Callable[[], T]) -> T:
    """Run `attempt`, trying again every LOCK_POLL_S while another connection holds the lock."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            if not _MAY_WAIT.get():
                raise _Locked from exc
            if time.monotonic() > deadline:
                raise
        time.sleep(LOCK_POLL_S)  # on the writer thread, never on an event loop (see _MAY_WAIT)


def _sqlite_writer(database: str) -> Engine:
    # No busy handler: SQLite's sleeps 1, 2, 5, 10, 15 … ms between tries, so a writer that found
    # the lock taken for 1.1 ms waited 3 ms, for 3.1 ms waited 8 — and the SOS listener process and
    # serve's runner take turns at it all through a surge. `_begin` polls every LOCK_POLL_S instead.
    # Inside BEGIN IMMEDIATE on a WAL database nothing else waits for another writer.
    engine = create_engine(f"sqlite:///{database}", connect_args={"timeout": 0})

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
        raw = conn.connection.dbapi_connection
        assert raw is not None
        _while_locked(lambda: raw.execute("BEGIN IMMEDIATE"))

    return engine


class IncidentStore:
    """Incidents and their event log in the directory's database (shares its engine)."""

    def __init__(self, engine: AsyncEngine, *, inline: bool = False) -> None:
        """`inline`: on SQLite, write on the caller's thread, not a writer thread. For the SOS
        listener process, whose loop has nothing else to do meanwhile (datagrams wait in the
        kernel): every thread hop there was a GIL hand-off inside a surge's RECEIPT path."""
        self._inline = inline
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
            if self._inline:
                self._writer.dispose()
            else:
                await asyncio.get_running_loop().run_in_executor(self._thread, self._writer.dispose)
            self._thread.shutdown(wait=True)
            self._thread = None
            self._writer = None

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one write transaction on this store's writer (on SQLite: its own thread and
        connection), so other writers of the same process (links) queue here instead of contending
        for SQLite's lock from connections of their own."""
        return await self._write(fn)

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        self._start_writer()
        if self._writer is not None and self._thread is not None:
            writer = self._writer

            def run() -> T:
                with writer.begin() as conn:
                    return fn(conn)

            return await self._run_writer(run)
        async with self._engine.begin() as conn:
            return await conn.run_sync(fn)

    async def write_statement(self, sql: str, params: tuple[Any, ...]) -> None:
        """One SQL statement as its own transaction: on SQLite in autocommit on the writer thread,
        so the write lock is held for one `sqlite3_step` — the GIL is let go the whole time and no
        Python runs while other writers (the SOS listener process) wait. Elsewhere, a transaction."""
        if self._sqlite_file is None:
            async with self._engine.begin() as conn:
                await conn.exec_driver_sql(sql, params)
            return
        self._start_writer()
        assert self._writer is not None and self._thread is not None
        writer = self._writer

        def run() -> None:
            with writer.connect() as conn:
                raw = conn.connection.dbapi_connection
                assert raw is not None
                try:
                    _while_locked(lambda: raw.execute(sql, params))  # isolation_level None: autocommit
                except sqlite3.Error as exc:
                    # The same exceptions as every other write here (IntegrityError …).
                    raise DBAPIError.instance(sql, params, exc, sqlite3.Error) from exc

        await self._run_writer(run)

    async def _run_writer(self, run: Callable[[], T]) -> T:
        """`run` on the writer thread; inline, on this thread unless the lock is taken (then on the
        writer thread after all, where waiting for it blocks no event loop)."""
        assert self._thread is not None
        if self._inline:
            token = _MAY_WAIT.set(False)
            try:
                return run()
            except _Locked:
                pass  # nothing was written: the lock is taken at the first statement
            finally:
                _MAY_WAIT.reset(token)
        return await asyncio.get_running_loop().run_in_executor(self._thread, run)

    def _start_writer(self) -> None:
        if self._sqlite_file is not None and self._writer is None:
            self._writer = _sqlite_writer(self._sqlite_file)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="incident-writer")

    # -- writing -------------------------------------------------------------------------------

    async def record(
        self, items: Sequence[RequestRecord], events: Sequence[EventRecord] = ()
    ) -> list[Recorded]:
        """Record requests (and pending log entries) in one transaction; one result per request."""
        return await self._write(lambda conn: self._recorder.record(conn, items, events))

    async def append_events(self, events: Sequence[EventRecord]) -> None:
        """Append steps to incidents' logs (the log is append-only: nothing is ever updated)."""
        if not events:
            return
        if self._sqlite_file is not None:
            # Built outside the write lock; appended in one autocommit statement.
            await self.write_statement(SQLITE_APPEND, (sqlite_append_payload(events),))
        else:
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

    # -- who runs which incident (several backends on one database) ------------------------------

    async def hold(self, runner: str, ids: Sequence[int], until: datetime) -> set[int]:
        """Take or extend `runner`'s hold on the incidents `ids` until `until`; the ids it holds now.
        An id missing from the answer is run by another backend (it took it over). Closed ones are
        held too: a cancelled incident's answered calls go on after it closed."""
        if not ids:
            return set()
        stmt = (
            update(incidents)
            .where(
                incidents.c.id.in_(list(ids)),
                or_(incidents.c.run_by.is_(None), incidents.c.run_by == runner),
            )
            .values(run_by=runner, run_until=_naive(until))
            .returning(incidents.c.id)
        )
        return set(await self.write(lambda conn: [r[0] for r in conn.execute(stmt)]))

    async def take_over(
        self, runner: str, now: datetime, until: datetime, *, unclaimed_before: datetime, own: bool
    ) -> builtins.list[Incident]:
        """Take every open incident nobody holds any more: another backend's whose hold ran out
        before `now`, and those no backend took that were opened before `unclaimed_before` (a
        backend takes its new incidents within moments). `own`: also `runner`'s own (after its
        restart). Newest first, like `list`."""
        free = [
            and_(incidents.c.run_by.is_not(None), incidents.c.run_by != runner,
                 incidents.c.run_until < _naive(now)),
            and_(incidents.c.run_by.is_(None), incidents.c.opened_at < _naive(unclaimed_before)),
        ]  # fmt: skip
        if own:
            free.append(incidents.c.run_by == runner)
        stmt = (
            update(incidents)
            .where(incidents.c.closed_at.is_(None), or_(*free))
            .values(run_by=runner, run_until=_naive(until))
            .returning(*incidents.c)
        )
        rows = await self.write(lambda conn: [_incident(r) for r in conn.execute(stmt)])
        return sorted(rows, key=lambda i: -i.id)

    async def runner_of(self, incident_id: int) -> tuple[str | None, datetime | None]:
        """Who holds the incident, and until when."""
        q = select(incidents.c.run_by, incidents.c.run_until).where(incidents.c.id == incident_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return (row[0], _aware(row[1])) if row is not None else (None, None)

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
