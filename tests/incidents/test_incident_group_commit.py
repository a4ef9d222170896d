"""GroupCommit on a real SQLite file: concurrent appends all land, in order, in few transactions."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from tests.sos.sos_support import provision, stb_ip
from voip_sos.directory import Directory
from voip_sos.incidents.group_commit import GroupCommit
from voip_sos.incidents.store import EventRecord, IncidentStore, RequestRecord

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class CountingStore(IncidentStore):
    """The real store, counting its append transactions."""

    commits = 0

    async def append_events(self, events: object) -> None:  # type: ignore[override]
        self.commits += 1
        await super().append_events(events)  # type: ignore[arg-type]


@pytest.fixture
async def directory(tmp_path: Path) -> AsyncIterator[Directory]:
    d = await Directory.open(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    await provision(d, 3)
    try:
        yield d
    finally:
        await d.close()


async def test_concurrent_appends_are_durable_in_order_and_grouped(directory: Directory) -> None:
    store = CountingStore(directory.engine)
    try:
        (opened,) = await store.record([RequestRecord("sos", os.urandom(16), stb_ip(0), "u00000", NOW)])
        assert opened.incident_id is not None
        log = GroupCommit(store)
        n = 200
        await asyncio.gather(
            *(log.append(EventRecord(opened.incident_id, "step", NOW, {"n": i})) for i in range(n))
        )
        steps = [e.detail["n"] for e in await store.events(opened.incident_id) if e.kind == "step"]
        assert steps == list(range(n))
        # The first append commits alone; everything queued meanwhile goes in the next commit(s).
        assert 1 <= store.commits <= 3
    finally:
        await store.aclose()


async def test_a_failed_commit_reaches_every_caller_of_that_group(directory: Directory) -> None:
    store = IncidentStore(directory.engine)
    try:
        log = GroupCommit(store)
        # No incident 999999: the foreign key (or the store) refuses the whole group.
        bad = [log.append(EventRecord(999999, "step", NOW, {"n": i})) for i in range(3)]
        results = await asyncio.gather(*bad, return_exceptions=True)
        assert all(isinstance(r, IntegrityError) for r in results), results
    finally:
        await store.aclose()
