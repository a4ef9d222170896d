"""The incident store on a real SQLite file and a real PostgreSQL database: dedup by the database."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from tests.sos.sos_support import provision, stb_ip
from voip_sos.directory import Directory
from voip_sos.directory.schema import downgrade, head_revision, upgrade
from voip_sos.incidents.store import EventRecord, IncidentStore, Recorded, RequestRecord
from voip_sos.incidents.tables import incidents

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def req(kind: str, n: int, rid: bytes | None = None, **kw: object) -> RequestRecord:
    return RequestRecord(kind, rid or os.urandom(16), stb_ip(n), f"u{n:05d}", NOW, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def directory(db_url: str) -> AsyncIterator[Directory]:
    await upgrade(db_url)
    d = await Directory.open(db_url, migrate=False)
    await provision(d, 10)
    try:
        yield d
    finally:
        await d.close()


async def test_one_press_one_incident_and_replays_start_nothing(directory: Directory) -> None:
    store = IncidentStore(directory.engine)
    first = req("sos", 0, detail={"seq": 1})
    got = await store.record([first, req("sos", 0), first, req("sos", 1)])
    one = got[0].incident_id
    assert one is not None
    assert (
        got[0] == Recorded(one, opened=True)
        and got[1] == Recorded(one)
        and got[2] == Recorded(one, again=True)
    )
    assert got[3].opened and got[3].incident_id != one
    # The same requests again in a later batch (retransmissions reaching a restarted backend).
    assert await store.record([first]) == [Recorded(one, again=True)]
    # A batch of many STBs goes the set-based way and gives the same answers.
    many = [req("sos", n) for n in range(2, 10)]
    results = await store.record(many)
    assert all(r.opened for r in results) and len({r.incident_id for r in results}) == 8
    assert await store.record(many) == [Recorded(r.incident_id, again=True) for r in results]
    inc = await store.get(one)
    assert inc is not None and not inc.test and inc.state == "open" and inc.uid == "u00000"
    kinds = [e.kind for e in await store.events(one)]
    assert kinds == ["sos_received", "incident_opened", "sos_received"]
    assert await store.count() == 10 and await store.count(open_only=True) == 10


async def test_cancel_update_heartbeat(directory: Directory) -> None:
    store = IncidentStore(directory.engine)
    assert await store.record([req("cancel", 0), req("update", 0, detail={"door_code": "1"})]) == [
        Recorded(None),
        Recorded(None),
    ]
    [opened] = await store.record([req("sos", 0)])
    assert opened.incident_id is not None
    beat, upd = await store.record([req("heartbeat", 0), req("update", 0, detail={"door_code": "4711"})])
    assert beat == Recorded(opened.incident_id) and upd == Recorded(opened.incident_id)
    # CANCEL and a new SOS of the same STB in one batch: closed, then a fresh incident.
    cancel, again, beat2 = await store.record([req("cancel", 0), req("sos", 0), req("heartbeat", 0)])
    assert cancel == Recorded(opened.incident_id, closed=True)
    assert again.opened and again.incident_id != opened.incident_id and beat2 == Recorded(again.incident_id)
    closed = await store.get(opened.incident_id)
    assert closed is not None and closed.state == "cancelled" and closed.closed_at is not None
    log = await store.events(opened.incident_id)
    assert [e.kind for e in log][-3:] == ["update_received", "cancel_received", "incident_closed"]
    assert log[2].detail["door_code"] == "4711"
    silent = {m.stb.ip for m in await directory.silent_stbs(NOW)}
    assert stb_ip(1) in silent and stb_ip(0) not in silent  # the heartbeats were recorded
    await store.append_events([EventRecord(again.incident_id, "call_placed", NOW, {"to": "120"})])
    assert (await store.events(again.incident_id))[-1].detail == {"to": "120"}
    assert await store.close(again.incident_id, NOW, "resolved") is True
    assert await store.close(again.incident_id, NOW, "resolved") is False
    assert [i.id for i in await store.list(open_only=True)] == []


async def test_the_database_refuses_a_second_open_incident(directory: Directory) -> None:
    await IncidentStore(directory.engine).record([req("sos", 3)])
    row = {
        "stb_ip": stb_ip(3),
        "uid": "x",
        "test": False,
        "state": "open",
        "opened_at": NOW.replace(tzinfo=None),
        "opened_by": "y",
    }
    with pytest.raises(IntegrityError):
        async with directory.engine.begin() as conn:
            await conn.execute(insert(incidents).values(row))


async def test_racing_stores_agree_on_one_incident(directory: Directory, db_url: str) -> None:
    # Two stores on two engines, as two backends would have: the same requests recorded at once.
    other = await Directory.open(db_url, migrate=False)
    try:
        a, b = IncidentStore(directory.engine), IncidentStore(other.engine)
        for round_ in range(5):
            batch = [req("sos", n, rid=bytes([round_, n]) * 8) for n in range(10)]
            ra, rb = await asyncio.gather(a.record(batch), b.record(batch))
            assert [r.incident_id for r in ra] == [r.incident_id for r in rb]
            assert all(x.again != y.again for x, y in zip(ra, rb, strict=True))
        assert await a.count() == 10
        for inc in await a.list():
            assert [e.kind for e in await a.events(inc.id)].count("sos_received") == 5
    finally:
        await other.close()


async def test_migration_goes_down_and_up(db_url: str) -> None:
    await upgrade(db_url)
    assert await downgrade(db_url, "0001") == "0001"
    assert await upgrade(db_url) == head_revision()


async def test_a_real_press_never_joins_a_test_incident(directory: Directory) -> None:
    store = IncidentStore(directory.engine)
    [test] = await store.record([req("sos", 4, test=True)])
    [test_again] = await store.record([req("sos", 4, test=True)])
    assert test_again.incident_id == test.incident_id  # a second test press joins the test
    [real] = await store.record([req("sos", 4)])
    assert real.opened and real.incident_id != test.incident_id
    closed = await store.get(test.incident_id)  # type: ignore[arg-type]
    assert (
        closed is not None
        and closed.closed_at is not None
        and closed.close_reason == "superseded_by_real_sos"
    )
    [test_late] = await store.record([req("sos", 4, test=True)])
    assert test_late.incident_id == real.incident_id  # a test press during a real incident joins it
    inc = await store.get(real.incident_id)  # type: ignore[arg-type]
    assert inc is not None and not inc.test


async def test_an_inline_store_waits_for_a_taken_lock_off_its_event_loop(directory: Directory) -> None:
    """The SOS listener process writes on its loop's thread; when another process holds SQLite's
    write lock, the write waits on the writer thread, and the loop goes on meanwhile."""
    if directory.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    store = IncidentStore(directory.engine, inline=True)
    other = sqlite3.connect(str(directory.engine.url.database), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's writer, holding the lock
        recording = asyncio.ensure_future(store.record([req("sos", 3)]))
        ran_meanwhile = asyncio.Event()

        async def meanwhile() -> None:
            ran_meanwhile.set()

        other_task = asyncio.ensure_future(meanwhile())
        await asyncio.wait_for(ran_meanwhile.wait(), 5)
        await other_task
        assert not recording.done()  # still waiting for the lock, and the loop was not blocked
        other.execute("COMMIT")
        (got,) = await asyncio.wait_for(recording, 10)
        assert got.opened and got.incident_id is not None
        # Unlocked, the same store writes in place.
        assert (await store.record([req("sos", 4)]))[0].opened
    finally:
        other.close()
        await store.aclose()


async def test_backends_hold_their_incidents_and_take_over_only_what_was_left(directory: Directory) -> None:
    """Several backends on one database: each runs what it holds; a restarted one takes its own
    back at once; another's only once its hold ran out; one nobody took only after a while."""
    store = IncidentStore(directory.engine)
    a1, b1, free, closed = [r.incident_id for r in await store.record([req("sos", n) for n in range(4)])]
    assert a1 and b1 and free and closed
    t0, lease = NOW + timedelta(seconds=30), timedelta(seconds=15)
    assert await store.hold("A", [a1], t0 + lease) == {a1}
    assert await store.hold("B", [b1, closed], t0 + lease) == {b1, closed}
    assert await store.hold("B", [a1], t0 + lease) == set()  # A holds it
    await store.close(closed, t0, "false_alarm", state="cancelled")

    # B restarts: its own at once; the one nobody took only once it is older than the grace.
    now = t0 + timedelta(seconds=5)
    mine = await store.take_over("B", now, now + lease, unclaimed_before=NOW - timedelta(seconds=1), own=True)
    assert [i.id for i in mine] == [b1]
    nobodys = await store.take_over(
        "B", now, now + lease, unclaimed_before=NOW + timedelta(seconds=1), own=False
    )
    assert [i.id for i in nobodys] == [free]
    assert await store.runner_of(free) == ("B", now + lease)

    # A keeps renewing: B takes nothing of it.
    assert await store.hold("A", [a1], t0 + timedelta(seconds=10) + lease) == {a1}
    later = t0 + timedelta(seconds=20)
    assert await store.take_over("B", later, later + lease, unclaimed_before=later, own=False) == []
    # A stops renewing (it died): once its hold ran out, B takes a1 -- the open one only.
    gone = t0 + timedelta(seconds=26)
    taken = await store.take_over("B", gone, gone + lease, unclaimed_before=gone, own=False)
    assert [i.id for i in taken] == [a1] and taken[0].uid == "u00000"
    assert await store.runner_of(a1) == ("B", gone + lease)
    # A comes back late: the incident is not its any more, and it learns so from its next renewal.
    assert await store.hold("A", [a1], gone + lease) == set()
    # A closed incident's hold is kept (its answered calls may still be up) but never taken over.
    assert await store.hold("B", [closed], gone + lease) == {closed}
    assert closed not in {i.id for i in await store.take_over("C", gone + 2 * lease, gone + 3 * lease,
                                                              unclaimed_before=gone + 3 * lease, own=False)}  # fmt: skip
