"""The directory repository: provisioning and reading subscribers (F1, F3).

All functions are async and return plain records (voip_sos.directory.records). Writes go through
SQLAlchemy Core in one transaction each; the SOS lookup takes the dedicated read path in lookup.py.
"""

from __future__ import annotations

import builtins
import dataclasses
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from voip_sos.directory.lookup import EngineLookup, LookupPath, SqliteLookup, to_aware
from voip_sos.directory.models import contacts, stbs, subscribers
from voip_sos.directory.records import ADDRESS_PARTS, Address, Contact, Stb, StbMatch, Subscriber
from voip_sos.directory.schema import create_engine, ensure_schema, is_sqlite, sqlite_path
from voip_sos.directory.validate import FieldError, normalize_ip, parse_hub_id
from voip_sos.errors import DirectoryError

__all__ = ["Directory", "load_subscribers", "subscriber_row", "utcnow", "write_children"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _naive(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None)


def subscriber_row(sub: Subscriber, now: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "uid": sub.uid,
        "name": sub.name,
        "language": sub.language,
        "address_line": sub.address.line,
        "notes": sub.notes,
        "hub_id": sub.hub_id,
        "updated_at": _naive(now),
    }
    for part in ADDRESS_PARTS:
        row[part] = getattr(sub.address, part)
    return row


class Directory:
    """The mapping table: STB fixed IP -> subscriber, home address, contacts."""

    def __init__(self, engine: AsyncEngine, lookup_path: LookupPath) -> None:
        self._engine = engine
        self._lookup = lookup_path

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, inline_lookup: bool = False) -> Directory:
        """Open the database at `url`; on SQLite apply pending migrations first (unless told not to).
        `inline_lookup`: SQLite lookups on the caller's thread (see `SqliteLookup`)."""
        engine = create_engine(url)
        try:
            if migrate:
                await ensure_schema(engine)
        except BaseException:
            await engine.dispose()
            raise
        path: LookupPath = (
            SqliteLookup(sqlite_path(url), inline=inline_lookup) if is_sqlite(url) else EngineLookup(engine)
        )
        return cls(engine, path)

    @property
    def engine(self) -> AsyncEngine:
        """The engine, for stores that share this database (incidents)."""
        return self._engine

    async def close(self) -> None:
        await self._lookup.close()
        await self._engine.dispose()

    async def __aenter__(self) -> Directory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- reading -----------------------------------------------------------------------------

    async def lookup_stb(self, ip: str) -> StbMatch | None:
        """F3: the subscriber whose STB has this IP (any textual form of it), or None."""
        try:
            key = normalize_ip(ip)
        except FieldError:
            return None
        return await self._lookup.lookup(key)

    async def get(self, uid: str) -> Subscriber | None:
        async with self._engine.connect() as conn:
            found = await load_subscribers(conn, select(subscribers).where(subscribers.c.uid == uid))
        return found[0] if found else None

    async def list(self, limit: int | None = None, offset: int = 0) -> list[Subscriber]:
        """Subscribers ordered by uid."""
        query = select(subscribers).order_by(subscribers.c.uid).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        async with self._engine.connect() as conn:
            return await load_subscribers(conn, query)

    async def updated_since(self, since: datetime, limit: int = 10_000) -> builtins.list[Subscriber]:
        """Subscribers added or changed at or after `since` (oldest change first)."""
        query = (
            select(subscribers)
            .where(subscribers.c.updated_at >= _naive(since))
            .order_by(subscribers.c.updated_at, subscribers.c.uid)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return await load_subscribers(conn, query)

    async def by_hub(self, hub_id: str) -> Subscriber | None:
        """The subscriber whose home hub this is, or None."""
        async with self._engine.connect() as conn:
            found = await load_subscribers(conn, select(subscribers).where(subscribers.c.hub_id == hub_id))
        return found[0] if found else None

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(subscribers))).scalar_one())

    # -- writing -----------------------------------------------------------------------------

    async def add(self, sub: Subscriber) -> Subscriber:
        """Insert a new subscriber; refuses an existing uid or an STB IP owned by someone else."""
        sub = _normalised(sub)
        now = utcnow()
        try:
            async with self._engine.begin() as conn:
                if await _subscriber_id(conn, sub.uid) is not None:
                    raise DirectoryError(f"subscriber {sub.uid} already exists (use update)")
                await _check_ips_free(conn, sub)
                await _check_hub_free(conn, sub)
                row = subscriber_row(sub, now) | {"created_at": _naive(now)}
                sid = (
                    await conn.execute(insert(subscribers).values(row).returning(subscribers.c.id))
                ).scalar_one()
                await write_children(conn, sid, sub, keep_secrets=False)
        except IntegrityError as exc:
            raise await self._explain(sub, exc) from None
        got = await self.get(sub.uid)
        assert got is not None
        return got

    async def replace(self, sub: Subscriber, *, keep_secrets: bool = False) -> Subscriber:
        """Overwrite an existing subscriber's record (STB last-seen times of kept IPs survive)."""
        sub = _normalised(sub)
        now = utcnow()
        try:
            async with self._engine.begin() as conn:
                sid = await _subscriber_id(conn, sub.uid)
                if sid is None:
                    raise DirectoryError(f"no subscriber {sub.uid}")
                await _check_ips_free(conn, sub)
                await _check_hub_free(conn, sub)
                await conn.execute(
                    update(subscribers).where(subscribers.c.id == sid).values(subscriber_row(sub, now))
                )
                await write_children(conn, sid, sub, keep_secrets=keep_secrets)
        except IntegrityError as exc:
            raise await self._explain(sub, exc) from None
        got = await self.get(sub.uid)
        assert got is not None
        return got

    async def remove(self, uid: str) -> bool:
        async with self._engine.begin() as conn:
            sid = await _subscriber_id(conn, uid)
            if sid is None:
                return False
            # Children first: foreign-key cascades are not switched on in every SQLite connection.
            await conn.execute(delete(contacts).where(contacts.c.subscriber_id == sid))
            await conn.execute(delete(stbs).where(stbs.c.subscriber_id == sid))
            await conn.execute(delete(subscribers).where(subscribers.c.id == sid))
        return True

    async def touch_stb(self, ip: str, when: datetime) -> bool:
        """Record a heartbeat: the STB's last-seen time. False if the IP is not provisioned."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(stbs).where(stbs.c.ip == normalize_ip(ip)).values(last_seen_at=_naive(when))
            )
        return bool(result.rowcount)

    async def silent_stbs(self, since: datetime) -> builtins.list[StbMatch]:
        """Provisioned STBs with no heartbeat since `since` (never seen counts as silent)."""
        query = select(stbs.c.ip).where(
            (stbs.c.last_seen_at.is_(None)) | (stbs.c.last_seen_at < _naive(since))
        )
        async with self._engine.connect() as conn:
            ips = [r[0] for r in (await conn.execute(query.order_by(stbs.c.ip)))]
        matches = [await self._lookup.lookup(ip) for ip in ips]
        return [m for m in matches if m is not None]

    async def stbs_without_secret(self, limit: int = 5) -> tuple[int, builtins.list[str]]:
        """How many STBs have no secret of their own, and the first `limit` of their IPs."""
        where = stbs.c.secret_hex.is_(None)
        async with self._engine.connect() as conn:
            total = int(
                (await conn.execute(select(func.count()).select_from(stbs).where(where))).scalar_one()
            )
            ips = [
                r[0]
                for r in await conn.execute(select(stbs.c.ip).where(where).order_by(stbs.c.ip).limit(limit))
            ]
        return total, ips

    async def _explain(self, sub: Subscriber, exc: IntegrityError) -> DirectoryError:
        """Turn a constraint race (another process wrote first) into the same words as our checks."""
        async with self._engine.connect() as conn:
            try:
                await _check_ips_free(conn, sub)
                await _check_hub_free(conn, sub)
            except DirectoryError as known:
                return known
        return DirectoryError(f"subscriber {sub.uid}: refused by the database: {exc.orig}")


def _normalised(sub: Subscriber) -> Subscriber:
    """IPs in their canonical form, so every textual form of one address is one key."""
    try:
        stb_list = tuple(dataclasses.replace(s, ip=normalize_ip(s.ip)) for s in sub.stbs)
        hub_id = parse_hub_id(sub.hub_id or "")
    except FieldError as exc:
        raise DirectoryError(f"subscriber {sub.uid}: {exc}") from None
    if not stb_list:
        raise DirectoryError(f"subscriber {sub.uid}: at least one STB IP is needed")
    if len({s.ip for s in stb_list}) != len(stb_list):
        raise DirectoryError(f"subscriber {sub.uid}: the same STB IP is given twice")
    return dataclasses.replace(sub, stbs=stb_list, hub_id=hub_id)


async def _subscriber_id(conn: AsyncConnection, uid: str) -> int | None:
    result = await conn.execute(select(subscribers.c.id).where(subscribers.c.uid == uid))
    value = result.scalar_one_or_none()
    return int(value) if value is not None else None


async def _check_ips_free(conn: AsyncConnection, sub: Subscriber) -> None:
    ips = [s.ip for s in sub.stbs]
    query = (
        select(stbs.c.ip, subscribers.c.uid)
        .join(subscribers, subscribers.c.id == stbs.c.subscriber_id)
        .where(stbs.c.ip.in_(ips), subscribers.c.uid != sub.uid)
    )
    for ip, owner in await conn.execute(query):
        raise DirectoryError(f"STB {ip} already belongs to subscriber {owner}; nothing was changed")


async def _check_hub_free(conn: AsyncConnection, sub: Subscriber) -> None:
    if sub.hub_id is None:
        return
    query = select(subscribers.c.uid).where(subscribers.c.hub_id == sub.hub_id, subscribers.c.uid != sub.uid)
    for (owner,) in await conn.execute(query):
        raise DirectoryError(f"hub {sub.hub_id} already belongs to subscriber {owner}; nothing was changed")


async def write_children(conn: AsyncConnection, sid: int, sub: Subscriber, *, keep_secrets: bool) -> None:
    """Make the subscriber's STBs and contacts exactly those of `sub`.

    STB rows whose IP stays keep their row (and last-seen time); `keep_secrets` leaves their secret
    as stored (a CSV without the stb_secret column does not manage secrets).
    """
    existing = {r.ip: r for r in await conn.execute(select(stbs).where(stbs.c.subscriber_id == sid))}
    wanted = {s.ip: s for s in sub.stbs}
    gone = [ip for ip in existing if ip not in wanted]
    if gone:
        await conn.execute(delete(stbs).where(stbs.c.subscriber_id == sid, stbs.c.ip.in_(gone)))
    for ip, stb in wanted.items():
        secret_hex = stb.secret.hex() if stb.secret else None
        if ip in existing:
            if not keep_secrets and existing[ip].secret_hex != secret_hex:
                await conn.execute(
                    update(stbs).where(stbs.c.id == existing[ip].id).values(secret_hex=secret_hex)
                )
        else:
            await conn.execute(insert(stbs).values(subscriber_id=sid, ip=ip, secret_hex=secret_hex))
    await conn.execute(delete(contacts).where(contacts.c.subscriber_id == sid))
    if not sub.contacts:
        return
    await conn.execute(
        insert(contacts),
        [
            {"subscriber_id": sid, "position": i, "name": c.name, "phone": c.phone}
            for i, c in enumerate(sub.contacts)
        ],
    )


async def load_subscribers(conn: AsyncConnection, query: Any) -> list[Subscriber]:
    rows = (await conn.execute(query)).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    contact_rows: dict[int, list[Contact]] = {i: [] for i in ids}
    for c in await conn.execute(
        select(contacts)
        .where(contacts.c.subscriber_id.in_(ids))
        .order_by(contacts.c.subscriber_id, contacts.c.position)
    ):
        contact_rows[c.subscriber_id].append(Contact(name=c.name, phone=c.phone))
    stb_rows: dict[int, list[Stb]] = {i: [] for i in ids}
    for t in await conn.execute(select(stbs).where(stbs.c.subscriber_id.in_(ids)).order_by(stbs.c.id)):
        stb_rows[t.subscriber_id].append(
            Stb(
                ip=t.ip,
                secret=bytes.fromhex(t.secret_hex) if t.secret_hex else None,
                last_seen_at=to_aware(t.last_seen_at),
            )
        )
    return [
        Subscriber(
            uid=r.uid,
            name=r.name,
            language=r.language,
            address=Address(r.address_line, *(getattr(r, p) for p in ADDRESS_PARTS)),
            notes=r.notes,
            hub_id=r.hub_id,
            created_at=to_aware(r.created_at),
            updated_at=to_aware(r.updated_at),
            contacts=tuple(contact_rows[r.id]),
            stbs=tuple(stb_rows[r.id]),
        )
        for r in rows
    ]
