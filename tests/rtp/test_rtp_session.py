"""One call's media core on a fake clock: symmetric RTP latching, RTCP timing and content, keys, stats."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from rtp_audio import dtmf_sequence

from voip_sos.rtp import g711
from voip_sos.rtp.events import DtmfReceived, FirstPacketReceived, MediaTimedOut, RemoteAddressLatched
from voip_sos.rtp.packet import RtpPacket
from voip_sos.rtp.prompt import Prompt
from voip_sos.rtp.rtcp import RTCP_BYE, RtcpPacket, SenderReport, parse_rtcp
from voip_sos.rtp.session import LATCH_PROBATION_PACKETS, MediaSession

SDP_ADDR = ("192.168.1.5", 5000)  # what the far end wrote in its SDP (behind NAT)
NAT_ADDR = ("203.0.113.9", 6000)  # where its packets really come from
SILENT = Prompt.from_pcm(bytes(3200))


def session(symmetric: bool = True, seed: int = 1) -> MediaSession:
    s = MediaSession(
        symmetric=symmetric, cname="test@host", wall_offset_s=1_700_000_000.0, rng=random.Random(seed)
    )
    s.set_remote(SDP_ADDR, codec="PCMA", payload_type=8, telephone_event_pt=101)
    return s


def far_packets(n: int, *, pt: int = 8, seq0: int = 100, ssrc: int = 77) -> list[bytes]:
    return [RtpPacket(pt, seq0 + i, 160 * i, ssrc, b"\xd5" * 160).serialize() for i in range(n)]


def events(s: MediaSession) -> list[object]:
    out = []
    while (e := s.next_event()) is not None:
        out.append(e)
    return out


def test_symmetric_rtp_latches_on_the_first_packet() -> None:
    s = session()
    assert s.remote == SDP_ADDR and s.rtcp_remote == ("192.168.1.5", 5001)
    s.receive_rtp(far_packets(1)[0], NAT_ADDR, 1.0)
    assert s.remote == NAT_ADDR and s.rtcp_remote == ("203.0.113.9", 6001)
    assert events(s) == [FirstPacketReceived(NAT_ADDR, 1.0), RemoteAddressLatched(NAT_ADDR, SDP_ADDR, 1.0)]
    # A later SDP (re-INVITE) does not undo what the packets proved.
    s.set_remote(SDP_ADDR, codec="PCMA", payload_type=8)
    assert s.remote == NAT_ADDR


def test_moving_again_needs_probation() -> None:
    s = session()
    packets = far_packets(20)
    s.receive_rtp(packets[0], NAT_ADDR, 1.0)
    other = ("198.51.100.1", 7000)
    s.receive_rtp(packets[1], other, 1.02)  # one stray packet: ignored
    s.receive_rtp(packets[2], NAT_ADDR, 1.04)
    assert s.remote == NAT_ADDR
    for i in range(LATCH_PROBATION_PACKETS):
        assert s.remote == NAT_ADDR
        s.receive_rtp(packets[3 + i], other, 1.06 + i * 0.02)
    assert s.remote == other
    assert isinstance(events(s)[-1], RemoteAddressLatched)


def test_packets_from_the_sdp_address_confirm_it() -> None:
    s = session()
    s.receive_rtp(far_packets(1)[0], SDP_ADDR, 1.0)
    s.receive_rtp(far_packets(1, seq0=101)[0], NAT_ADDR, 1.02)
    assert s.remote == SDP_ADDR  # already confirmed: a new source needs probation


def test_no_latching_without_symmetric_rtp_or_for_unknown_payloads() -> None:
    fixed = session(symmetric=False)
    fixed.receive_rtp(far_packets(1)[0], NAT_ADDR, 1.0)
    assert fixed.remote == SDP_ADDR
    s = session()
    s.receive_rtp(far_packets(1, pt=96)[0], NAT_ADDR, 1.0)  # a payload type nobody negotiated
    assert s.remote == SDP_ADDR


def test_nothing_is_sent_before_the_far_address_is_known() -> None:
    s = MediaSession(symmetric=True, cname="x", rng=random.Random(1))
    s.start(0.0, SILENT)
    assert s.rtp_due(0.0) == []
    s.set_remote(SDP_ADDR, codec="PCMU", payload_type=0)
    first = RtpPacket.parse(s.rtp_due(0.02)[0])
    # Nothing was built for the slot without a destination: the far end sees no gap.
    assert (first.payload_type, first.marker, s.sender.packets_sent) == (0, True, 1)
    assert first.sequence_number == s.sender._seq - 1


def test_sender_reports_every_interval_with_consistent_times() -> None:
    s = session()
    assert s.rtcp_due(100.0) is None  # not started
    s.start(0.0, SILENT)
    sent_at: list[float] = []
    t = 0.0
    for _ in range(1500):  # 30 s of 20 ms slots
        s.rtp_due(t)
        if s.rtcp_due(t) is not None:
            sent_at.append(t)
        t += 0.02
    gaps = np.diff([0.0, *sent_at])
    assert len(sent_at) >= 4 and all(2.5 - 1e-9 <= g <= 7.5 + 0.02 for g in gaps)  # RFC 3550 §6.3.5
    report = s._report(10.0)
    sr, sdes = parse_rtcp(report)
    assert isinstance(sr, SenderReport) and isinstance(sdes, RtcpPacket)
    assert sr.ssrc == s.sender.ssrc and sr.packets == s.sender.packets_sent and sr.octets == 160 * sr.packets
    assert sr.rtp_timestamp == (s.sender._ts0 + 80_000) & 0xFFFFFFFF  # 10 s after start at 8000 Hz
    assert sr.ntp >> 32 == 1_700_000_010 + 2_208_988_800
    assert sr.blocks == ()  # nothing received yet


def test_report_block_loss_jitter_and_lsr() -> None:
    s = session()
    s.start(0.0, SILENT)
    packets = far_packets(10)
    for i, p in enumerate(packets):
        if i not in (3, 6):  # two lost
            s.receive_rtp(p, SDP_ADDR, 1.0 + 0.02 * i)
    far_sr = (
        bytes.fromhex("80c80006") + (77).to_bytes(4, "big") + bytes.fromhex("0000123456789abc") + bytes(12)
    )
    s.receive_rtcp(far_sr, ("192.168.1.5", 5001), 1.5)
    sr = parse_rtcp(s._report(2.0))[0]
    assert isinstance(sr, SenderReport)
    (block,) = sr.blocks
    assert (block.ssrc, block.cumulative_lost, block.highest_seq) == (77, 2, 109)
    assert block.fraction_lost == 2 * 256 // 10
    assert block.jitter == 0  # perfectly paced
    assert block.lsr == 0x12345678 and block.dlsr == 32768  # 0.5 s in 1/65536 s
    stats = s.receiver.stats()
    assert (stats.packets, stats.lost, stats.source, stats.ssrc) == (8, 2, SDP_ADDR, 77)


def test_bye_closes_the_stream() -> None:
    s = session()
    assert s.bye(0.0) is None
    s.start(0.0, SILENT)
    last = parse_rtcp(s.bye(1.0) or b"")[-1]
    assert isinstance(last, RtcpPacket) and last.packet_type == RTCP_BYE
    assert s.rtcp_due(100.0) is None


def test_rfc4733_keys_between_two_sessions_and_inband_then_off(tmp_path: Path) -> None:
    a, b = session(seed=1), session(seed=2)
    b.start(0.0, SILENT)
    b.sender.send_dtmf("1")
    b.sender.send_dtmf("9")
    for n in range(40):
        for p in b.rtp_due(n * 0.02):
            a.receive_rtp(p, SDP_ADDR, n * 0.02)
    keys = [e for e in events(a) if isinstance(e, DtmfReceived)]
    assert [(k.digit, k.source) for k in keys] == [("1", "rfc4733"), ("9", "rfc4733")]
    # A sender that uses telephone-events may also leave tones in its audio: not reported twice.
    tones = Prompt.from_pcm(dtmf_sequence(tmp_path, "5", tone_s=0.1, gap_s=0.1))
    b.sender.play(tones, loop=False)
    for n in range(40, 80):
        for p in b.rtp_due(n * 0.02):
            a.receive_rtp(p, SDP_ADDR, n * 0.02)
    assert [e for e in events(a) if isinstance(e, DtmfReceived)] == []


@pytest.mark.parametrize("codec", g711.CODECS)
def test_inband_keys_from_audio(tmp_path: Path, codec: g711.Codec) -> None:
    a, b = session(seed=1), session(seed=2)
    for s in (a, b):
        s.set_remote(SDP_ADDR, codec=codec, payload_type=g711.STATIC_PAYLOAD_TYPES[codec])
    b.start(0.0, Prompt.from_pcm(dtmf_sequence(tmp_path, "19", tone_s=0.08, gap_s=0.08)), loop=False)
    for n in range(30):
        for p in b.rtp_due(n * 0.02):
            a.receive_rtp(p, SDP_ADDR, n * 0.02)
    keys = [e for e in events(a) if isinstance(e, DtmfReceived)]
    assert [(k.digit, k.source) for k in keys] == [("1", "inband"), ("9", "inband")]


def test_inactivity_is_reported_once_per_silence() -> None:
    s = MediaSession(symmetric=True, cname="x", inactivity_s=2.0, rng=random.Random(1))
    s.set_remote(SDP_ADDR, codec="PCMA", payload_type=8)
    s.start(0.0, SILENT)
    far = far_packets(3)
    t, found = 0.0, []
    for n in range(400):  # 8 s
        t = n * 0.02
        if n in (150, 151, 152):  # the far end speaks at 3 s, then stops again
            s.receive_rtp(far[n - 150], SDP_ADDR, t)
        s.rtp_due(t)
        found += [e for e in events(s) if isinstance(e, MediaTimedOut)]
    assert [round(e.at, 2) for e in found] == [2.0, 5.04]
    # On hold, silence from the far end is expected and not reported.
    held = MediaSession(symmetric=True, cname="x", inactivity_s=2.0, rng=random.Random(1))
    held.set_remote(SDP_ADDR, codec="PCMA", payload_type=8)
    held.start(0.0, SILENT)
    held.sender.pause(True)
    for n in range(200):
        held.rtp_due(n * 0.02)
    assert [e for e in events(held) if isinstance(e, MediaTimedOut)] == []
