"""The database-backed LinkStore: expiring links kept in the directory's database (table `links`).

Links outlive the process that made them: the SMS is out, and a restarted backend (or another
backend sharing a PostgreSQL directory) must still serve the voice message. Only the token's
SHA-256 goes into the database; `create()` is the only place the token exists in clear.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from voip_sos.directory.schema import sqlite_time
from voip_sos.web.links import Link, new_token, token_hash
from voip_sos.web.tables import links

__all__ = ["DbLinkStore", "WriteStatement", "WriteTransaction"]

WriteTransaction = Callable[[Callable[[Connection], Any]], Awaitable[Any]]
WriteStatement = Callable[[str, tuple[Any, ...]], Awaitable[None]]

log = logging.getLogger(__name__)

# A clash of two 128-bit random tokens does not happen; the bound keeps a broken RNG from looping.
_CREATE_ATTEMPTS = 3


def _naive_utc(when: datetime) -> datetime:
    """Naive UTC for the database (a naive `when` is taken to be UTC already)."""
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo is not None else when


_SQLITE_INSERT = (
    "INSERT INTO links (token_hash, incident_id, kind, target, created_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _sqlite_params(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["token_hash"],
        row["incident_id"],
        row["kind"],
        row["target"],
        sqlite_time(row["created_at"]),
        sqlite_time(row["expires_at"]),
    )


def _insert_link(conn: Connection, *, row: dict[str, Any]) -> None:
    conn.execute(insert(links).values(**row))


class DbLinkStore:
    """LinkStore on an async SQLAlchemy engine (SQLite or PostgreSQL, schema at revision >= 0003)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write: WriteTransaction | None = None,
        write_statement: WriteStatement | None = None,
    ) -> None:
        """`write`: run a function in a write transaction elsewhere (`IncidentStore.write`), so a
        busy `serve` has one writer for the database instead of two connections taking turns."""
        self._engine = engine
        self._write = write
        # On SQLite, one autocommit statement on the incident writer (`IncidentStore.write_statement`):
        # the write lock is held for SQLite's time only, not while Python runs between statements.
        self._write_statement = write_statement if engine.dialect.name == "sqlite" else None

    async def create(self, link: Link, *, now: datetime | None = None) -> str:
        """Store `link` under a fresh token and return the token (never stored in clear)."""
        created = _naive_utc(now or datetime.now(UTC))
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            token = new_token()
            row = {
                "token_hash": token_hash(token),
                "incident_id": link.incident_id,
                "kind": link.kind,
                "target": link.target,
                "created_at": created,
                "expires_at": _naive_utc(link.expires_at),
            }
            try:
                if self._write_statement is not None:
                    await self._write_statement(_SQLITE_INSERT, _sqlite_params(row))
                elif self._write is not None:
                    await self._write(functools.partial(_insert_link, row=row))
                else:
                    async with self._engine.begin() as conn:
                        await conn.execute(insert(links).values(**row))
            except IntegrityError:
                if attempt == _CREATE_ATTEMPTS:
                    raise
                log.warning("link token clashed with a stored one, drawing another")
                continue
            return token
        raise AssertionError("unreachable")

    async def resolve(self, token: str, now: datetime) -> Link | None:
        """The link for `token` if it exists and `now` is before its expiry, else None."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(links.c.incident_id, links.c.kind, links.c.target, links.c.expires_at).where(
                        links.c.token_hash == token_hash(token), links.c.expires_at > _naive_utc(now)
                    )
                )
            ).first()
        if row is None:
            return None
        return Link(row.incident_id, row.kind, row.target, row.expires_at.replace(tzinfo=UTC))

    async def purge_expired(self, now: datetime) -> int:
        """Delete every link expired at `now`; return how many went."""
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(links).where(links.c.expires_at <= _naive_utc(now)))
        return int(result.rowcount or 0)
