"""The listener and STB agents over real loopback sockets, on a real SQLite directory."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.sos.relay import start_relay
from tests.sos.sos_support import provision, secret_of, stb_ip
from voip_sos.aio.sos_listener import SosListenerProtocol, start_sos_listener
from voip_sos.directory import Address, Contact, Directory, Stb, Subscriber
from voip_sos.incidents.store import IncidentStore, Recorded, RequestRecord
from voip_sos.sos.listener import ListenerSettings
from voip_sos.sos.wire import Message, MsgType, RejectReason, StatusCode, encode
from voip_sos.stb.aio import StbClient, open_stb_client
from voip_sos.stb.events import ReceiptReceived, RejectReceived


def status_hook(proto: SosListenerProtocol) -> Any:
    """A stand-in for the incident runner: tell the STB one STATUS per new or cancelled incident."""

    def hook(rec: RequestRecord, res: Recorded) -> None:
        if res.incident_id is None or res.again:
            return
        if res.opened:
            proto.send_status(res.incident_id, rec.stb_ip, StatusCode.NOBODY_REACHED)
        elif res.closed:
            proto.send_status(res.incident_id, rec.stb_ip, StatusCode.CLOSED, "cancelled")

    return hook


@dataclass
class Backend:
    directory: Directory
    store: IncidentStore
    proto: SosListenerProtocol


async def _backend(url: str, settings: ListenerSettings, stbs: int) -> Backend:
    directory = await Directory.open(url)
    await provision(directory, stbs)
    store = IncidentStore(directory.engine)
    hooks = []

    def on_recorded(rec: RequestRecord, res: Recorded) -> None:
        for h in hooks:
            h(rec, res)

    proto = await start_sos_listener("127.0.0.1", 0, settings, directory, store, on_recorded)
    hooks.append(status_hook(proto))
    return Backend(directory, store, proto)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    b = await _backend(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", ListenerSettings(check_clock=True), 100)
    try:
        yield b
    finally:
        await b.proto.close()
        await b.store.aclose()
        await b.directory.close()


async def _clients(b: Backend, n: int, target: tuple[str, int] | None = None) -> list[StbClient]:
    return [await open_stb_client(stb_ip(i), secret_of(i), [target or b.proto.address]) for i in range(n)]


async def test_hundred_stbs_through_thirty_percent_loss_each_way(backend: Backend) -> None:
    relay = await start_relay(backend.proto.address, loss_up=0.3, loss_down=0.3, seed=6)
    clients = await _clients(backend, 100, relay.address)
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(c.request(MsgType.SOS) for c in clients)), 60)
        assert all(isinstance(a, ReceiptReceived) for a in answers)
        ids = [a.incident_id for a in answers if isinstance(a, ReceiptReceived)]
        assert len(set(ids)) == 100
        assert relay.counts["up_dropped"] > 0 and relay.counts["down_dropped"] > 0
        assert max(a.tries for a in answers) > 1  # the loss really cost retransmissions
        assert await backend.store.count() == 100
        for i in ids:
            assert [e.kind for e in await backend.store.events(i)].count("sos_received") == 1
        # STATUS reaches every STB (resent through the loss until SEEN).
        statuses = await asyncio.wait_for(asyncio.gather(*(c.statuses.get() for c in clients)), 60)
        assert [s.incident_id for s in statuses] == ids
        assert all(s.status is StatusCode.NOBODY_REACHED for s in statuses)
        for _ in range(600):
            if backend.proto.core.get_timer() is None:
                break
            await asyncio.sleep(0.1)
        assert backend.proto.core.get_timer() is None  # every STATUS was seen
    finally:
        for c in clients:
            c.close()
        relay.close()


async def test_flood_from_one_source_does_not_delay_the_others(backend: Backend) -> None:
    clients = await _clients(backend, 20)
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooder.bind((stb_ip(99), 0))
    forged = encode(Message(MsgType.SOS, os.urandom(16), 1, 0, stb_ip(99)), b"wrong key" * 4)
    loop = asyncio.get_running_loop()
    sent = 0

    def flood() -> None:  # in a thread: a sender the listener's loop does not control
        nonlocal sent
        while sent < 10_000:
            flooder.sendto(forged if sent % 2 else os.urandom(100), backend.proto.address)
            sent += 1
            if sent % 50 == 0:
                time.sleep(0.005)  # ~10,000 datagrams/s: a flood lasting about a second

    def seen() -> int:
        c = backend.proto.core.counters
        return c["rate_limited"] + c["malformed"] + c["bad_mac"]

    try:
        flooding = loop.run_in_executor(None, flood)
        for _ in range(5_000):  # until a fifth of the flood is out
            if sent >= 2_000:
                break
            await asyncio.sleep(0.001)
        answers = await asyncio.gather(*(c.request(MsgType.SOS) for c in clients))
        assert sent < 10_000, "the presses should have happened during the flood"
        await flooding
        assert all(isinstance(a, ReceiptReceived) for a in answers)
        assert max(a.tries for a in answers) <= 2, [a.tries for a in answers]
        for _ in range(100):
            before = seen()
            await asyncio.sleep(0.05)
            if seen() == before:
                break
        # The flood was really processed (not lost in the kernel) and nearly all of it cost one bucket check.
        assert seen() >= 9_000
        assert backend.proto.core.counters["rate_limited"] >= seen() - 25
        assert await backend.store.count() == 20
    finally:
        flooder.close()
        for c in clients:
            c.close()


def _probe(src: str, datagrams: list[bytes], target: tuple[str, int]) -> list[bytes]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((src, 0))
        s.settimeout(0.5)
        for d in datagrams:
            s.sendto(d, target)
        got = []
        try:
            while True:
                got.append(s.recv(2048))
        except TimeoutError:
            return got
    finally:
        s.close()


async def test_probing_gets_no_reply_at_all(backend: Backend) -> None:
    target = backend.proto.address
    unknown = "127.0.200.7"
    datagrams_unknown = [
        encode(Message(MsgType.SOS, os.urandom(16), 1, 0, unknown), os.urandom(32)),
        encode(Message(MsgType.HEARTBEAT, os.urandom(16), 1, 0, unknown), secret_of(0)),
        b"\x01" + os.urandom(200),
    ]
    known = stb_ip(5)
    datagrams_wrong_key = [
        encode(Message(MsgType.SOS, os.urandom(16), 1, 0, known), secret_of(6)),
        encode(Message(MsgType.CANCEL, os.urandom(16), 1, 0, known), os.urandom(32)),
        encode(Message(MsgType.SOS, os.urandom(16), 1, 0, stb_ip(7)), secret_of(7)),  # from the wrong source
    ]
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, _probe, unknown, datagrams_unknown, target) == []
    assert await loop.run_in_executor(None, _probe, known, datagrams_wrong_key, target) == []
    c = backend.proto.core.counters
    assert (c["unknown_stb"], c["bad_mac"], c["malformed"], c["source_mismatch"]) == (2, 2, 1, 1)
    assert await backend.store.count() == 0


async def test_rejects_reach_authenticated_senders_over_the_socket(backend: Backend) -> None:
    [c] = await _clients(backend, 1)
    try:
        ans = await c.request(MsgType.CANCEL)
        assert isinstance(ans, RejectReceived) and ans.reason is RejectReason.NO_INCIDENT
        # A clock an hour slow: REJECT clock, corrected, resent, accepted (sos.check_clock is on here).
        c.agent._wall = lambda: time.time() - 3600
        ans = await c.request(MsgType.SOS, test=True)
        assert isinstance(ans, ReceiptReceived) and ans.tries == 2
        assert backend.proto.core.counters["clock"] == 1
        before = datetime.now(UTC)
        heartbeat = await c.request(MsgType.HEARTBEAT)
        assert isinstance(heartbeat, ReceiptReceived) and heartbeat.incident_id == ans.incident_id
        upd = await c.request(MsgType.UPDATE, door_code="482913", parking_code="P-7")
        assert isinstance(upd, ReceiptReceived) and upd.incident_id == ans.incident_id
        inc = await backend.store.get(ans.incident_id)
        assert inc is not None and inc.test
        kinds = {e.kind: e for e in await backend.store.events(ans.incident_id)}
        assert kinds["update_received"].detail["door_code"] == "482913"
        silent = await backend.directory.silent_stbs(before)
        assert stb_ip(0) not in {m.stb.ip for m in silent} and len(silent) == 99
    finally:
        c.close()


async def test_ipv6_stb_end_to_end(tmp_path: Path) -> None:
    directory = await Directory.open(f"sqlite+aiosqlite:///{tmp_path / 'v6.db'}")
    store = IncidentStore(directory.engine)
    await directory.add(
        Subscriber(
            uid="v6",
            name="Six",
            language="en",
            address=Address("6 Road"),
            contacts=(Contact("Son", "+8613800000006"),),
            stbs=(Stb(ip="::1", secret=b"6" * 32),),
        )
    )
    proto = await start_sos_listener("::1", 0, ListenerSettings(), directory, store)
    c = await open_stb_client("::1", b"6" * 32, [proto.address])
    try:
        ans = await c.request(MsgType.SOS)
        assert isinstance(ans, ReceiptReceived) and ans.incident_id > 0
        inc = await store.get(ans.incident_id)
        assert inc is not None and inc.stb_ip == "::1"
    finally:
        c.close()
        await proto.close()
        await store.aclose()
        await directory.close()
