"""The backend's hub bridge in-process, over the real broker, a real hub with its Zigbee2MQTT lock
simulator and a real incident store (SQLite): which incident an event lands on when it beats its
SOS, after a false alarm, without a request the backend knows; the context push failing; the
family page's Revoker and CodesSource.

The incident runner is represented by `Sink`, which records the codes the bridge hands it (the
runner's side — the SMS — is covered end to end in test_hub_backend_e2e.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from tests.hub import hub_support
from tests.hub.broker import free_port
from tests.hub.hub_sims import Z2mLockSim
from tests.hub.hub_support import running_hub, stb_for, wait_for, write_config
from voip_sos.config import HostPort
from voip_sos.directory import Address, Contact, Directory, Stb, Subscriber
from voip_sos.hub.link import HubLink
from voip_sos.hub.topics import event_topic
from voip_sos.incidents import hub_bridge
from voip_sos.incidents.hub_bridge import HubBridge, codes_from_log
from voip_sos.incidents.store import IncidentStore, Recorded, RequestRecord

STB_IP = "127.0.0.1"


@dataclass
class Sink:
    """Stands in for the incident runner's `hub_codes` entry: records what it was handed."""

    live: set[int] = field(default_factory=set)
    got: list[tuple[int, str | None, str | None]] = field(default_factory=list)

    def hub_codes(self, incident_id: int, door_code: str | None, parking_code: str | None) -> bool:
        self.got.append((incident_id, door_code, parking_code))
        return incident_id in self.live


@dataclass
class World:
    directory: Directory
    store: IncidentStore
    hub_id: str
    sub: Subscriber


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    d = await Directory.open(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    hub_id = hub_support.unique("hub")
    sub = Subscriber(
        uid="U9", name="Ann", language="en", address=Address("9 Oak Road", room="3"),
        contacts=(Contact("Son", "+8613800000009"),), stbs=(Stb(STB_IP),), hub_id=hub_id,
    )  # fmt: skip
    await d.add(sub)
    store = IncidentStore(d.engine)
    try:
        yield World(d, store, hub_id, sub)
    finally:
        await store.aclose()
        await d.close()


async def sos(w: World, rid: bytes | None = None, kind: str = "sos") -> tuple[RequestRecord, Recorded]:
    rec = RequestRecord(kind, rid or os.urandom(16), STB_IP, w.sub.uid, datetime.now(UTC), subscriber=w.sub)
    return rec, (await w.store.record([rec]))[0]


async def publish_event(hub_id: str, kind: str, payload: str) -> None:
    """What a hub publishes (used where the test must choose exactly when an event arrives)."""
    b = hub_support.BROKER
    async with aiomqtt.Client(b.host, b.port) as c:
        await c.publish(event_topic(hub_id, kind), payload.encode(), qos=1)


async def kinds(w: World, incident: int) -> list[str]:
    return [e.kind for e in await w.store.events(incident)]


@pytest.fixture
async def bridge(world: World) -> AsyncIterator[tuple[HubBridge, Sink]]:
    async with HubLink(hub_support.BROKER, client_id=hub_support.unique("backend")) as link:
        b = HubBridge(link, world.store, world.directory, revoke_timeout_s=5)
        sink = Sink()
        await b.start(sink)
        try:
            yield b, sink
        finally:
            await b.close()


async def test_code_that_beats_its_sos_waits_for_it_and_context_reaches_the_hub(
    world: World, bridge: tuple[HubBridge, Sink], tmp_path: Path
) -> None:
    b, sink = bridge
    # An earlier false alarm from the same home: the bridge knows it as the home's latest incident.
    old_rec, old = await sos(world)
    b.on_recorded(old_rec, old)
    cancel, cancelled = await sos(world, kind="cancel")
    b.on_recorded(cancel, cancelled)
    assert cancelled.closed
    cfg = write_config(tmp_path, hub={"id": world.hub_id})
    async with (
        Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock,
        running_hub(cfg) as hub,
        stb_for(hub) as stb,
    ):
        rid = os.urandom(16)
        codes = await stb.request_codes(request_id=rid)  # the hub answers before the SOS is recorded
        assert codes is not None and codes.door_code is not None
        await asyncio.sleep(0.3)
        rec, res = await sos(world, rid)
        assert res.opened and res.incident_id is not None and res.incident_id != old.incident_id
        sink.live.add(res.incident_id)
        b.on_recorded(rec, res)
        await wait_for(lambda: bool(sink.got), 5, "the early code handed to the runner")
        assert sink.got == [(res.incident_id, codes.door_code, None)]
        events = await world.store.events(res.incident_id)
        door = [e for e in events if e.kind == "hub_door_code"]
        assert len(door) == 1 and door[0].detail["door_code"] == codes.door_code
        assert door[0].detail["request"] == rid.hex() and door[0].detail["slot"] == 20
        assert old.incident_id is not None and "hub_door_code" not in await kinds(world, old.incident_id)
        # The context went to the hub for the parking pass: uid, full address, first contact.
        await wait_for(lambda: hub._incident() == str(res.incident_id), 5, "context at the hub")
        assert hub._context is not None
        ctx = hub._context[1]
        assert (ctx.uid, ctx.address, ctx.contact_phone) == ("U9", "9 Oak Road, room 3", "+8613800000009")
        # The family page's view of the codes, then its Revoke: the lock's confirmed answer.
        got = await b.codes(res.incident_id)
        assert got is not None and got.door_code == codes.door_code and got.door_valid_until is not None
        result = await b.revoke(res.incident_id)
        assert (result.cleared_slots, result.confirmed, result.error) == ((20,), True, None)
        assert lock.temporary() == {}
        await wait_for(lambda: b.recorded >= 2, 5, "the hub's revoked event recorded")
        assert "hub_revoked" in await kinds(world, res.incident_id)


async def test_unknown_request_falls_back_to_the_open_incident_and_cancel_stops_texts(
    world: World, bridge: tuple[HubBridge, Sink], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_bridge, "EARLY_EVENT_S", 0.3)
    b, sink = bridge
    rec, res = await sos(world)
    assert res.incident_id is not None
    inc = res.incident_id
    sink.live.add(inc)
    b.on_recorded(rec, res)
    await asyncio.sleep(0.2)
    # An STB that does not share its SOS id: the request is never known; after the wait the event
    # lands on the home's open incident.
    await publish_event(world.hub_id, "parking_pass", '{"request": "ab12", "incident": null, "code": "P-1", '
                        '"valid_until": 1800000000}')  # fmt: skip
    await wait_for(lambda: bool(sink.got), 5, "the parking pass placed by the fallback")
    assert sink.got == [(inc, None, "P-1")]
    # Another hub's event never lands here, whatever incident it names.
    await publish_event("hub-other", "door_code", f'{{"request": "{rec.request_id.hex()}", "incident": "{inc}", '
                        '"code": "999999"}')  # fmt: skip
    # Malformed payloads from the (authenticated) hub are refused, not recorded.
    rid = rec.request_id.hex()
    await publish_event(world.hub_id, "door_code", f'{{"request": "{rid}", "code": ["4711"]}}')
    await publish_event(world.hub_id, "door_code", f'{{"request": "{rid}", "code": "1\\n2"}}')
    await publish_event(world.hub_id, "failed", f'{{"request": "{rid}", "reason": "{"x" * 5000}"}}')
    # A false alarm: a code after it is recorded, but nobody is texted.
    cancel, cres = await sos(world, kind="cancel")
    assert cres.incident_id == inc
    b.on_recorded(cancel, cres)
    await publish_event(
        world.hub_id, "door_code", f'{{"request": "{rec.request_id.hex()}", "code": "482913"}}'
    )
    await wait_for(lambda: b.recorded >= 2, 5, "the late code recorded")
    await asyncio.sleep(0.5)
    assert sink.got == [(inc, None, "P-1")]
    assert await kinds(world, inc) == [
        "sos_received", "incident_opened", "hub_parking_pass", "cancel_received", "incident_closed",
        "hub_door_code",
    ]  # fmt: skip
    got = await b.codes(inc)
    assert got is not None and (got.door_code, got.parking_code) == ("482913", "P-1")
    # After a restart the codes come from the log.
    fresh = codes_from_log(await world.store.events(inc))
    assert fresh is not None and (fresh.door_code, fresh.parking_code) == ("482913", "P-1")
    assert fresh.parking_valid_until == datetime.fromtimestamp(1800000000, UTC)


async def test_context_not_sent_is_retried_then_logged_and_recorded(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hub_bridge, "CONTEXT_RETRY_S", 0.5)
    monkeypatch.setattr(hub_bridge, "CONTEXT_RETRY_EVERY_S", 0.1)
    dead = HubLink(HostPort("127.0.0.1", free_port()))  # nothing listens: never connected
    b = HubBridge(dead, world.store, world.directory)
    rec, res = await sos(world)
    assert res.incident_id is not None
    with caplog.at_level(logging.ERROR, logger="voip_sos.incidents.hub_bridge"):
        b.on_recorded(rec, res)  # returns at once: the SOS path never waits for the broker
        await wait_for(lambda: bool(caplog.records), 5, "the error logged")
        await asyncio.sleep(0.2)
    line = caplog.records[0]
    assert "incident context not sent" in line.getMessage()
    assert line.incident == str(res.incident_id) and line.hub == world.hub_id
    failed = [e for e in await world.store.events(res.incident_id) if e.kind == "hub_context_failed"]
    assert len(failed) == 1 and "broker connection down" in failed[0].detail["error"]
    # No hub for an incident: the page gets a clear answer instead of an exception.
    other = dataclasses.replace(world.sub, uid="U10", stbs=(Stb("127.0.0.2"),), hub_id=None)
    await world.directory.add(other)
    rec2 = RequestRecord("sos", os.urandom(16), "127.0.0.2", "U10", datetime.now(UTC), subscriber=other)
    (res2,) = await world.store.record([rec2])
    assert res2.incident_id is not None
    result = await b.revoke(res2.incident_id)
    assert (result.confirmed, result.error) == (False, "no home hub for this incident")
    await b.close()
