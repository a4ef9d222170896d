"""The directory repository on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from voip_sos.directory import Address, Contact, Directory, Stb, Subscriber
from voip_sos.directory.schema import create_engine, current_revision, downgrade, head_revision, upgrade
from voip_sos.errors import DirectoryError

SECRET = bytes.fromhex("00112233445566778899aabbccddeeff")


def make(uid: str = "U1001", ip: str = "10.1.0.1", **kw: object) -> Subscriber:
    base = Subscriber(
        uid=uid,
        name="王芳",
        language="zh",
        address=Address("北京市海淀区花园路12号", city="北京", building="3", unit="2", floor="5", room="502"),
        contacts=(Contact("儿子", "+8613800000001"), Contact("Daughter", "13900000002")),
        stbs=(Stb(ip, SECRET),),
        notes="diabetic; insulin in the fridge",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def directory(db_url: str) -> Directory:
    if db_url.startswith("postgresql"):
        await upgrade(db_url)
    d = await Directory.open(db_url)
    yield d  # type: ignore[misc]
    await d.close()


async def test_add_then_lookup_returns_the_whole_record(directory: Directory) -> None:
    await directory.add(make())
    match = await directory.lookup_stb("10.1.0.1")
    assert match is not None
    sub = match.subscriber
    assert (sub.uid, sub.name, sub.language) == ("U1001", "王芳", "zh")
    assert sub.address.line == "北京市海淀区花园路12号" and sub.address.room == "502"
    assert [c.phone for c in sub.contacts] == ["+8613800000001", "13900000002"]
    assert match.stb.ip == "10.1.0.1" and match.stb.secret == SECRET
    assert sub.notes.startswith("diabetic")
    assert sub.created_at is not None and sub.created_at.tzinfo is not None


async def test_unknown_and_malformed_ips_find_nothing(directory: Directory) -> None:
    await directory.add(make())
    assert await directory.lookup_stb("10.1.0.2") is None
    assert await directory.lookup_stb("not-an-ip") is None


async def test_ip_forms_are_normalised(directory: Directory) -> None:
    await directory.add(make(stbs=(Stb("2001:DB8:0:0::7"), Stb("10.9.9.9"))))
    v6 = await directory.lookup_stb("2001:db8::7")
    mapped = await directory.lookup_stb("::ffff:10.9.9.9")
    assert v6 is not None and v6.stb.ip == "2001:db8::7"
    assert mapped is not None and mapped.stb.ip == "10.9.9.9"


async def test_contacts_keep_their_order(directory: Directory) -> None:
    order = tuple(Contact(f"C{i}", f"+86138000000{i:02d}") for i in (5, 1, 9, 3))
    await directory.add(make(contacts=order))
    got = await directory.get("U1001")
    assert got is not None and got.contacts == order


async def test_duplicate_uid_is_refused(directory: Directory) -> None:
    await directory.add(make())
    with pytest.raises(DirectoryError, match="U1001 already exists"):
        await directory.add(make(ip="10.1.0.2"))


async def test_ip_of_another_subscriber_is_refused_and_nothing_changes(directory: Directory) -> None:
    await directory.add(make())
    with pytest.raises(DirectoryError, match=r"STB 10\.1\.0\.1 already belongs to subscriber U1001"):
        await directory.add(make(uid="U2002", stbs=(Stb("10.1.0.9"), Stb("10.1.0.1"))))
    assert await directory.get("U2002") is None
    assert await directory.lookup_stb("10.1.0.9") is None


async def test_replace_changes_record_and_keeps_last_seen(directory: Directory) -> None:
    await directory.add(make())
    seen = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert await directory.touch_stb("10.1.0.1", seen)
    new = make(name="Wang Fang", stbs=(Stb("10.1.0.1", SECRET), Stb("10.1.0.7")))
    await directory.replace(new)
    got = await directory.get("U1001")
    assert got is not None and got.name == "Wang Fang"
    assert [(s.ip, s.last_seen_at) for s in got.stbs] == [("10.1.0.1", seen), ("10.1.0.7", None)]


async def test_remove_frees_the_ip(directory: Directory) -> None:
    await directory.add(make())
    assert await directory.remove("U1001")
    assert not await directory.remove("U1001")
    assert await directory.lookup_stb("10.1.0.1") is None
    await directory.add(make(uid="U3003"))
    match = await directory.lookup_stb("10.1.0.1")
    assert match is not None and match.subscriber.uid == "U3003"


async def test_list_is_ordered_and_limited(directory: Directory) -> None:
    for i in (3, 1, 2):
        await directory.add(make(uid=f"U{i}", ip=f"10.1.0.{i}"))
    assert [s.uid for s in await directory.list()] == ["U1", "U2", "U3"]
    assert [s.uid for s in await directory.list(limit=2)] == ["U1", "U2"]
    assert await directory.count() == 3


async def test_silent_stbs(directory: Directory) -> None:
    await directory.add(make(uid="A", ip="10.1.0.1"))
    await directory.add(make(uid="B", ip="10.1.0.2"))
    now = datetime.now(UTC)
    await directory.touch_stb("10.1.0.1", now)
    silent = await directory.silent_stbs(now - timedelta(minutes=10))
    assert [m.stb.ip for m in silent] == ["10.1.0.2"]


async def test_change_by_another_connection_is_seen_by_the_next_lookup(db_url: str) -> None:
    """A second Directory (as another process would have) writes; the first sees it at once."""
    if db_url.startswith("postgresql"):
        await upgrade(db_url)
    backend = await Directory.open(db_url)
    cli = await Directory.open(db_url)
    try:
        assert await backend.lookup_stb("10.1.0.1") is None
        await cli.add(make())
        match = await backend.lookup_stb("10.1.0.1")
        assert match is not None and match.subscriber.name == "王芳"
        await cli.replace(make(name="Li Wei"))
        match = await backend.lookup_stb("10.1.0.1")
        assert match is not None and match.subscriber.name == "Li Wei"
        await cli.remove("U1001")
        assert await backend.lookup_stb("10.1.0.1") is None
    finally:
        await backend.close()
        await cli.close()


async def test_concurrent_lookups_share_one_read_path(directory: Directory) -> None:
    for i in range(20):
        await directory.add(make(uid=f"U{i}", ip=f"10.2.0.{i}"))
    matches = await asyncio.gather(*(directory.lookup_stb(f"10.2.0.{i % 25}") for i in range(200)))
    assert sum(m is not None for m in matches) == 160
    assert all(m.subscriber.uid == f"U{m.stb.ip.rsplit('.', 1)[1]}" for m in matches if m)


async def test_alembic_upgrade_from_empty_and_round_trip(db_url: str) -> None:
    assert await current_revision(db_url) is None
    assert await upgrade(db_url) == head_revision()
    assert await downgrade(db_url, "base") is None
    assert await upgrade(db_url) == head_revision()
    d = await Directory.open(db_url)
    try:
        await d.add(make())
        assert await d.lookup_stb("10.1.0.1") is not None
    finally:
        await d.close()


async def test_postgres_schema_behind_is_refused_not_migrated(pg_database_url: str) -> None:
    with pytest.raises(DirectoryError, match="run `voip-sos db upgrade`"):
        await Directory.open(pg_database_url)


async def test_sqlite_file_is_migrated_on_open(tmp_path: object) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/fresh/dir.db"
    d = await Directory.open(url)
    await d.close()
    assert await current_revision(url) == head_revision()


async def test_updated_since_finds_added_and_changed(directory: Directory) -> None:
    await directory.add(make(uid="A", ip="10.1.0.1"))
    mark = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await directory.add(make(uid="B", ip="10.1.0.2"))
    assert [s.uid for s in await directory.updated_since(mark)] == ["B"]
    await directory.replace(make(uid="A", ip="10.1.0.1", name="Changed"))
    assert [s.uid for s in await directory.updated_since(mark)] == ["B", "A"]


async def test_hub_id_is_stored_looked_up_and_unique(directory: Directory) -> None:
    await directory.add(make(uid="A", ip="10.1.0.1", hub_id="hub-0042"))
    await directory.add(make(uid="B", ip="10.1.0.2"))
    await directory.add(make(uid="C", ip="10.1.0.3"))  # many homes without a hub: NULLs never clash
    match = await directory.lookup_stb("10.1.0.1")
    assert match is not None and match.subscriber.hub_id == "hub-0042"
    found = await directory.by_hub("hub-0042")
    assert found is not None and found.uid == "A"
    assert await directory.by_hub("hub-9999") is None
    with pytest.raises(DirectoryError, match="hub hub-0042 already belongs to subscriber A"):
        await directory.replace(make(uid="B", ip="10.1.0.2", hub_id="hub-0042"))
    with pytest.raises(DirectoryError, match='subscriber D: "Hub/0042" is not a hub id'):
        await directory.add(make(uid="D", ip="10.1.0.4", hub_id="Hub/0042"))
    b = await directory.get("B")
    assert b is not None and b.hub_id is None
    await directory.replace(make(uid="A", ip="10.1.0.1", hub_id=None))
    await directory.replace(make(uid="B", ip="10.1.0.2", hub_id="hub-0042"))
    assert (await directory.by_hub("hub-0042")).uid == "B"  # type: ignore[union-attr]


async def test_migration_0005_adds_hub_id_and_keeps_rows_both_ways(db_url: str) -> None:
    assert await upgrade(db_url, "0004") == "0004"
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO subscribers (uid, name, language, address_line, created_at, updated_at) "
                    "VALUES ('OLD', 'Old', 'en', '1 Road', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
            sid = (await conn.execute(text("SELECT id FROM subscribers"))).scalar_one()
            await conn.execute(text(f"INSERT INTO stbs (subscriber_id, ip) VALUES ({sid}, '10.7.0.1')"))
    finally:
        await engine.dispose()
    assert await upgrade(db_url) == head_revision()
    d = await Directory.open(db_url)
    try:
        old = await d.get("OLD")
        assert old is not None and old.hub_id is None and [s.ip for s in old.stbs] == ["10.7.0.1"]
        await d.replace(dataclasses.replace(old, hub_id="hub-1", contacts=(Contact("A", "1"),)))
    finally:
        await d.close()
    assert await downgrade(db_url, "0004") == "0004"
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM stbs"))).scalar_one() == 1
            assert (await conn.execute(text("SELECT count(*) FROM contacts"))).scalar_one() == 1
    finally:
        await engine.dispose()
