"""The SOS read path: STB IP -> subscriber, in well under a millisecond (F3).

On SQLite a dedicated `sqlite3` connection, used from one worker thread, runs three indexed queries
that the sqlite3 statement cache keeps prepared; the ORM is not on this path. Nothing is cached
above the database, so a change committed by any process (the CLI, another backend) is seen by the
very next lookup. On PostgreSQL the same queries run on the async engine's pooled connections.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from voip_sos.directory.records import Address, Contact, Stb, StbMatch, Subscriber

__all__ = ["EngineLookup", "LookupPath", "SqliteLookup", "to_aware"]

_SUBSCRIBER_SQL = (
    "SELECT s.id, s.uid, s.name, s.language, s.address_line, s.province, s.city, s.district, s.street, "
    "s.number, s.building, s.unit, s.floor, s.room, s.notes, s.created_at, s.updated_at, s.hub_id "
    "FROM stbs t JOIN subscribers s ON s.id = t.subscriber_id WHERE t.ip = {p}"
)
_CONTACTS_SQL = "SELECT name, phone FROM contacts WHERE subscriber_id = {p} ORDER BY position"
_STBS_SQL = "SELECT ip, secret_hex, last_seen_at FROM stbs WHERE subscriber_id = {p} ORDER BY id"


def to_aware(value: datetime | str | None) -> datetime | None:
    """Stored naive-UTC time (a datetime, or SQLite's text form) -> aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def build_match(
    ip: str, row: Sequence[Any], contact_rows: Sequence[Sequence[Any]], stb_rows: Sequence[Sequence[Any]]
) -> StbMatch:
    stb_list = tuple(
        Stb(ip=r[0], secret=bytes.fromhex(r[1]) if r[1] else None, last_seen_at=to_aware(r[2]))
        for r in stb_rows
    )
    sub = Subscriber(
        uid=row[1],
        name=row[2],
        language=row[3],
        address=Address(*row[4:14]),
        notes=row[14],
        created_at=to_aware(row[15]),
        updated_at=to_aware(row[16]),
        hub_id=row[17],
        contacts=tuple(Contact(name=c[0], phone=c[1]) for c in contact_rows),
        stbs=stb_list,
    )
    stb = next(s for s in stb_list if s.ip == ip)
    return StbMatch(subscriber=sub, stb=stb)


class LookupPath(Protocol):
    async def lookup(self, ip: str) -> StbMatch | None:
        """The record whose STB has this (normalised) IP, or None."""
        ...

    async def close(self) -> None: ...


class SqliteLookup:
    """sqlite3 on one worker thread: no event-loop blocking, no ORM, statements stay prepared."""

    def __init__(self, path: str, *, inline: bool = False) -> None:
        """`inline`: look up on the caller's thread instead (the SOS listener process, whose loop
        does nothing else: a lookup costs ~0.1 ms there, a thread hop costs GIL hand-offs)."""
        self._path = path
        self._inline = inline
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="directory-lookup")
        self._conn: sqlite3.Connection | None = None
        self._sql = tuple(q.format(p="?") for q in (_SUBSCRIBER_SQL, _CONTACTS_SQL, _STBS_SQL))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=10.0, cached_statements=32, isolation_level=None)
        conn.execute("PRAGMA query_only=1")
        return conn

    def _lookup_sync(self, ip: str) -> StbMatch | None:
        if self._conn is None:
            self._conn = self._connect()
        sub_sql, contacts_sql, stbs_sql = self._sql
        # One read transaction, so the three reads see the same committed state.
        self._conn.execute("BEGIN")
        try:
            row = self._conn.execute(sub_sql, (ip,)).fetchone()
            if row is None:
                return None
            contacts = self._conn.execute(contacts_sql, (row[0],)).fetchall()
            stb_rows = self._conn.execute(stbs_sql, (row[0],)).fetchall()
        finally:
            self._conn.execute("COMMIT")
        return build_match(ip, row, contacts, stb_rows)

    async def lookup(self, ip: str) -> StbMatch | None:
        if self._inline:
            return self._lookup_sync(ip)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._lookup_sync, ip)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._inline:
            self._close_sync()
        else:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)


class EngineLookup:
    """The same three queries on the async engine (PostgreSQL, where the pool is shared)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sql = tuple(text(q.format(p=":p")) for q in (_SUBSCRIBER_SQL, _CONTACTS_SQL, _STBS_SQL))

    async def lookup(self, ip: str) -> StbMatch | None:
        sub_sql, contacts_sql, stbs_sql = self._sql
        async with self._engine.connect() as conn:
            row = (await conn.execute(sub_sql, {"p": ip})).first()
            if row is None:
                return None
            contacts = (await conn.execute(contacts_sql, {"p": row[0]})).all()
            stb_rows = (await conn.execute(stbs_sql, {"p": row[0]})).all()
        return build_match(ip, row, contacts, stb_rows)

    async def close(self) -> None:
        return None
