"""Helpers shared by the SOS tests: a provisioned directory on a real SQLite file, PostgreSQL databases."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from voip_sos.directory import Address, Contact, Directory, Stb, Subscriber

PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def stb_ip(n: int) -> str:
    """Distinct loopback addresses for STB number n (127.0.1.0 upwards; 127.0.0.1 stays the backend's)."""
    return f"127.{(n >> 16) & 0xFF}.{1 + ((n >> 8) & 0xFF)}.{n & 0xFF}"


def secret_of(n: int) -> bytes:
    return bytes([n & 0xFF, (n >> 8) & 0xFF]) * 16


async def provision(d: Directory, count: int, *, secrets: bool = True, first: int = 0) -> list[str]:
    """Add `count` subscribers, one STB each (with its own secret unless told otherwise)."""
    ips = []
    for n in range(first, first + count):
        ip = stb_ip(n)
        await d.add(
            Subscriber(
                uid=f"u{n:05d}",
                name=f"Subscriber {n}",
                language="en",
                address=Address(line=f"{n} Test Street"),
                contacts=(Contact("Child", "+8613800000000"),),
                stbs=(Stb(ip=ip, secret=secret_of(n) if secrets else None),),
            )
        )
        ips.append(ip)
    return ips


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, uniquely named PostgreSQL database (dropped afterwards); yields its URL."""
    name = f"sos_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
