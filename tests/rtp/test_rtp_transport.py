"""The asyncio media engine over real loopback UDP sockets: continuity, pacing, symmetric RTP, keys,
RTCP, ports, many calls in one loop."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rtp_audio import dtmf_sequence

from voip_sos.aio.media_process import ProcessRtpEngine
from voip_sos.aio.rtp_transport import GRID_S, RtpEngine, RtpSession
from voip_sos.config import PortRange
from voip_sos.errors import MediaError
from voip_sos.rtp.events import (
    DtmfReceived,
    FirstPacketReceived,
    PromptPlayed,
    RemoteAddressLatched,
    RtpEvent,
)
from voip_sos.rtp.packet import RtpPacket
from voip_sos.rtp.prompt import Prompt
from voip_sos.rtp.rtcp import RTCP_BYE, RtcpPacket, SenderReport, parse_rtcp

HOST = "127.0.0.1"


def port_range(pairs: int) -> PortRange:
    first = random.randrange(20000, 60000 - 2 * pairs, 2)
    return PortRange(first, first + 2 * pairs - 1)


class Sink(asyncio.DatagramProtocol):
    """A far end that timestamps every datagram it receives and can send from its own socket."""

    def __init__(self) -> None:
        self.got: list[tuple[float, bytes, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.arrived = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((asyncio.get_running_loop().time(), data, addr[:2]))
        self.arrived.set()

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d) for _, d, _ in self.got]


async def sink() -> Sink:
    _, proto = await asyncio.get_running_loop().create_datagram_endpoint(Sink, local_addr=(HOST, 0))
    return proto


@pytest.fixture(params=["on the loop", "in the media process"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Every test below runs against both engines: the one on the caller's loop (tools, tests) and
    the one in a media process of its own (`serve`, voip_sos/aio/media_process.py)."""
    e: Any
    if request.param == "on the loop":
        e = RtpEngine(ports=port_range(60), host=HOST, rtcp_interval_s=0.2)
    else:
        e = ProcessRtpEngine(ports=port_range(60), host=HOST, rtcp_interval_s=0.2)
        await e.start()
    try:
        yield e
    finally:
        await e.close()


def sine_prompt(seconds: float, hz: float = 440.0) -> Prompt:
    n = np.arange(int(seconds * 8000))
    return Prompt.from_pcm((np.sin(2 * np.pi * hz * n / 8000) * 6000).astype(np.int16))


def assert_continuous(packets: list[RtpPacket]) -> None:
    assert len({p.ssrc for p in packets}) == 1
    for a, b in itertools.pairwise(packets):
        assert (b.sequence_number - a.sequence_number) & 0xFFFF == 1
        assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160
    assert packets[0].marker and not any(p.marker for p in packets[1:])


async def test_one_continuous_paced_stream_through_prompt_changes(engine: RtpEngine) -> None:
    far = await sink()
    s = await engine.open()
    assert s.local_port % 2 == 0 and s.local_rtcp_port == s.local_port + 1
    s.set_remote(far.addr, codec="PCMA", payload_type=8, telephone_event_pt=101)
    loop = asyncio.get_running_loop()
    started = loop.time()
    s.start(sine_prompt(0.3), loop=True, gap_s=0.1)
    await asyncio.sleep(0.5)
    s.restart_prompt()
    await asyncio.sleep(0.3)
    s.replace_prompt(sine_prompt(0.2, 880), loop=False)
    await asyncio.sleep(0.5)
    elapsed = loop.time() - started
    await s.close()
    packets = far.packets()
    assert_continuous(packets)
    # Absolute schedule: the count follows the clock, not the number of wakeups (slots skipped only
    # if this machine stalled the loop for over 100 ms).
    assert abs(len(packets) + s.stats.slots_skipped - elapsed / 0.020) <= 3
    assert far.got[0][0] - started <= GRID_S + 0.05
    assert {p.payload_type for p in packets} == {8}
    assert s.stats.packets_sent == len(packets) and s.stats.prompt_repetitions == 1
    repeats = [e for e in _drain(s) if isinstance(e, PromptPlayed)]
    assert repeats and repeats[-1].repetitions == 1


def _drain(s: RtpSession) -> list[RtpEvent]:
    out = []
    while not s.events.empty():
        out.append(s.events.get_nowait())
    return out


async def test_symmetric_rtp_follows_the_real_source(engine: RtpEngine) -> None:
    sdp_far, real_far = await sink(), await sink()
    s = await engine.open()
    s.set_remote(sdp_far.addr, codec="PCMU", payload_type=0)
    s.start(None)
    await asyncio.sleep(0.1)
    assert sdp_far.got and not real_far.got
    assert real_far.transport is not None
    real_far.transport.sendto(RtpPacket(0, 1, 0, 55, b"\xff" * 160).serialize(), (HOST, s.local_port))
    await asyncio.wait_for(real_far.arrived.wait(), 2)
    await asyncio.sleep(0.1)
    assert (await s.stats_now()).remote == real_far.addr
    events = _drain(s)
    assert FirstPacketReceived(real_far.addr, events[0].at) == events[0]  # type: ignore[union-attr]
    assert any(isinstance(e, RemoteAddressLatched) and e.addr == real_far.addr for e in events)
    await s.close()
    # The stream moved, it did not restart.
    assert_continuous([RtpPacket.parse(d) for _, d, _ in sorted(sdp_far.got + real_far.got)])


async def test_keys_between_two_calls_rfc4733_and_inband(engine: RtpEngine, tmp_path: Path) -> None:
    heard: list[DtmfReceived] = []
    a = await engine.open(on_event=lambda e: heard.append(e) if isinstance(e, DtmfReceived) else None)
    b = await engine.open()
    a.set_remote((HOST, b.local_port), codec="PCMA", payload_type=8, telephone_event_pt=101)
    b.set_remote((HOST, a.local_port), codec="PCMA", payload_type=8, telephone_event_pt=101)
    a.start(None)
    b.start(Prompt.from_pcm(dtmf_sequence(tmp_path, "7", tone_s=0.08, gap_s=0.1)), loop=False)
    await asyncio.sleep(0.4)
    b.send_dtmf("1")
    b.send_dtmf("9")
    await asyncio.sleep(0.6)
    assert [(k.digit, k.source) for k in heard] == [("7", "inband"), ("1", "rfc4733"), ("9", "rfc4733")]
    received = (await a.stats_now()).received
    assert received.packets > 40 and received.source == (HOST, b.local_port)


async def test_rtcp_reports_and_bye(engine: RtpEngine) -> None:
    far_rtp, far_rtcp = await sink(), await sink()
    s = await engine.open()
    s.set_remote(far_rtp.addr, codec="PCMA", payload_type=8, rtcp_addr=far_rtcp.addr)
    s.start(sine_prompt(1.0))
    await asyncio.sleep(0.8)
    await s.close()
    await asyncio.sleep(0.05)  # the BYE in flight
    reports = [parse_rtcp(d) for _, d, _ in far_rtcp.got]
    assert len(reports) >= 3  # every 0.1-0.3 s here; every 2.5-7.5 s in production
    assert all(isinstance(r[0], SenderReport) for r in reports)
    last = reports[-1][-1]
    assert isinstance(last, RtcpPacket) and last.packet_type == RTCP_BYE
    final = reports[-1][0]
    assert isinstance(final, SenderReport) and final.packets == len(far_rtp.got)


async def test_port_pairs_are_allocated_skipped_and_released() -> None:
    ports = port_range(3)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    e = RtpEngine(ports=ports, host=HOST)
    try:
        blocker.bind((HOST, ports.first + 3))  # someone else holds the second pair's RTCP port
        a = await e.open()
        b = await e.open()
        assert (a.local_port, b.local_port) == (ports.first, ports.first + 4)
        with pytest.raises(MediaError, match="no free RTP port pair"):
            await e.open()
        await a.close()
        c = await e.open()
        assert c.local_port == ports.first
        assert e.sessions == 2
    finally:
        blocker.close()
        await e.close()
    assert e.sessions == 0


async def test_malformed_datagrams_are_dropped_and_counted(engine: RtpEngine) -> None:
    far = await sink()
    s = await engine.open()
    s.set_remote(far.addr, codec="PCMA", payload_type=8)
    s.start(None)
    assert far.transport is not None
    for junk in (b"\x00", b"\x00" * 20, b"\x80\x08"):
        far.transport.sendto(junk, (HOST, s.local_port))
    far.transport.sendto(b"\x00\x01", (HOST, s.local_rtcp_port))
    await asyncio.sleep(0.1)
    stats = await s.stats_now()
    assert stats.received.invalid == 4 and stats.received.packets == 0
    assert stats.remote == far.addr  # junk never steers the stream
    n = len(far.got)
    await asyncio.sleep(0.1)
    assert len(far.got) > n  # still sending


async def test_fifty_calls_share_one_timer(engine: RtpEngine) -> None:
    far = await sink()
    calls = [await engine.open() for _ in range(50)]
    for c in calls:
        c.set_remote(far.addr, codec="PCMU", payload_type=0)
        c.start(sine_prompt(0.2), loop=True, gap_s=0.04)
        await asyncio.sleep(0.003)  # started at different phases of the 20 ms frame
    await asyncio.sleep(0.6)
    for c in calls:
        await c.close()
    by_ssrc: dict[int, list[RtpPacket]] = {}
    for p in far.packets():
        by_ssrc.setdefault(p.ssrc, []).append(p)
    assert len(by_ssrc) == 50
    for packets in by_ssrc.values():
        assert len(packets) >= 25
        assert_continuous(packets)
