"""Engines and schema: opening the database and applying the Alembic migrations.

Every command that opens the directory on a SQLite file applies pending migrations itself, so a new
installation needs no separate step; on PostgreSQL (shared by several backends) `voip-sos db upgrade`
is run deliberately, and a backend refuses to start on a schema that is behind.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from voip_sos.errors import DirectoryError

__all__ = [
    "create_engine",
    "current_revision",
    "downgrade",
    "ensure_schema",
    "head_revision",
    "is_sqlite",
    "sqlite_path",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000


def sqlite_time(when: datetime) -> str:
    """A naive UTC datetime as SQLAlchemy stores `DateTime` on SQLite, for raw SQL that writes rows
    the ORM-free code reads back like every other."""
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> str:
    """The file behind a SQLite URL."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise DirectoryError(f"directory.url: a SQLite file is needed, got {url!r}")
    return database


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (the SOS lookup) never wait for a writer (an import in another process).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.close()


def create_engine(url: str) -> AsyncEngine:
    """An async engine with the settings this project relies on (WAL and foreign keys on SQLite)."""
    if is_sqlite(url):
        Path(sqlite_path(url)).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


async def _run(url: str, fn: Any, *args: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            if fn is not None:
                await conn.run_sync(lambda c: fn(_alembic_config(c), *args))
            return await conn.run_sync(_current)
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head") -> str | None:
    return await _run(url, command.upgrade, revision)


async def downgrade(url: str, revision: str) -> str | None:
    return await _run(url, command.downgrade, revision)


async def current_revision(url: str) -> str | None:
    return await _run(url, None)


async def ensure_schema(engine: AsyncEngine) -> None:
    """Apply pending migrations on SQLite; on PostgreSQL refuse a schema that is behind."""
    head = head_revision()
    async with engine.begin() as conn:
        current = await conn.run_sync(_current)
        if current == head:
            return
        if engine.dialect.name == "sqlite":
            await conn.run_sync(lambda c: command.upgrade(_alembic_config(c), "head"))
            return
    raise DirectoryError(
        f"database schema is at {current or 'empty'}, this version needs {head}: run `voip-sos db upgrade`"
    )
