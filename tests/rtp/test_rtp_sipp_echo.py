"""Our media engine against a real third-party RTP peer: SIPp's RTP echo (`sipp -rtp_echo`) sends every
packet back from its media port; we must receive our own stream whole and hear the keys it carries."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rtp_audio import dtmf_sequence, read_pcm, silence

from voip_sos.aio.rtp_transport import RtpEngine
from voip_sos.config import PortRange
from voip_sos.rtp.events import DtmfReceived, FirstPacketReceived, RtpEvent
from voip_sos.rtp.prompt import Prompt

HOST = "127.0.0.1"


def _free_udp_ports(count: int, step: int) -> int:
    """A base port with base, base + step, … free right now (SIPp binds them itself)."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 2)
        socks = []
        try:
            for i in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((HOST, base + i * step))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP ports")


@pytest.fixture
def sipp_echo() -> Iterator[int]:
    """SIPp as a UAS with its RTP echo on; yields the media port. Stopped by PID, also on failure."""
    exe = shutil.which("sipp")
    if exe is None:
        pytest.fail("sipp is not installed (scripts/setup.sh installs sip-tester)")
    media = _free_udp_ports(2, 2)
    sip = _free_udp_ports(1, 1)
    proc = subprocess.Popen(
        [
            exe,
            "-sn",
            "uas",
            "-i",
            HOST,
            "-p",
            str(sip),
            "-rtp_echo",
            "-mp",
            str(media),
            "-mi",
            HOST,
            "-nostdin",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield media
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_echoed_stream_is_whole_and_its_keys_are_heard_once(sipp_echo: int, tmp_path: Path) -> None:
    events: list[RtpEvent] = []
    echoing = asyncio.Event()

    def on_event(event: RtpEvent) -> None:
        events.append(event)
        if isinstance(event, FirstPacketReceived):
            echoing.set()

    base = _free_udp_ports(10, 2)
    engine = RtpEngine(ports=PortRange(base, base + 19), host=HOST)
    try:
        s = await engine.open(on_event=on_event)
        s.set_remote((HOST, sipp_echo), codec="PCMU", payload_type=0, telephone_event_pt=101)
        # A prompt with two keys as tones in it: the echo brings them back as received audio.
        lead = read_pcm(silence(tmp_path / "lead.wav", 0.3))
        tones = dtmf_sequence(tmp_path, "19", tone_s=0.08, gap_s=0.1)
        s.start(Prompt.from_pcm(np.concatenate([lead, tones])), loop=False)
        await asyncio.wait_for(echoing.wait(), 5)  # SIPp starting up
        await asyncio.sleep(0.8)
        s.send_dtmf("5")
        await asyncio.sleep(0.5)
        s.set_sending(False)
        await asyncio.sleep(0.2)  # the last packets come back
        sent = s.stats.packets_sent
        received = s.stats.received
        keys = [(e.digit, e.source) for e in events if isinstance(e, DtmfReceived)]
        assert keys == [("1", "inband"), ("9", "inband"), ("5", "rfc4733")]
        assert received.source == (HOST, sipp_echo)
        assert received.lost == 0 and received.invalid == 0
        assert received.ssrc == s.stats.ssrc  # our own stream, echoed
        # Everything from the first echoed packet to the last one we sent came back.
        assert s.core.receiver._max_seq == (s.core.sender._seq - 1) & 0xFFFF
        assert 60 <= received.packets <= sent
    finally:
        await engine.close()
