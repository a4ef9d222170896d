"""RTCP (RFC 3550 §6): our SR/SDES/BYE bytes, parsing compound packets, every parser error."""

from __future__ import annotations

import struct

import pytest

from voip_sos.errors import RemoteProtocolError
from voip_sos.rtp.rtcp import (
    RTCP_BYE,
    RTCP_SDES,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    build_bye,
    build_sdes,
    build_sr,
    ntp_from_unix,
    parse_rtcp,
)


def test_ntp_timestamp_of_known_instants() -> None:
    assert ntp_from_unix(0.0) == 2_208_988_800 << 32
    assert ntp_from_unix(1.5) == ((2_208_988_801 << 32) | (1 << 31))


def test_sender_report_bytes_and_round_trip() -> None:
    block = ReportBlock(
        ssrc=9, fraction_lost=51, cumulative_lost=-3, highest_seq=70_000, jitter=12, lsr=5, dlsr=6
    )
    sr = build_sr(0xAABBCCDD, ntp=(1 << 63) | 7, rtp_timestamp=160, packets=10, octets=1600, block=block)
    assert sr[:4] == bytes([0x81, 200, 0, 12])  # RC=1, length 12 words after the first
    assert len(sr) == 52
    assert parse_rtcp(sr) == [SenderReport(0xAABBCCDD, (1 << 63) | 7, 160, 10, 1600, (block,))]
    bare = build_sr(1, ntp=0, rtp_timestamp=0, packets=0, octets=0)
    assert bare[:4] == bytes([0x80, 200, 0, 6]) and len(bare) == 28


def test_compound_with_sdes_and_bye() -> None:
    compound = build_sr(1, 2, 3, 4, 5) + build_sdes(1, "voip-sos@host") + build_bye(1)
    parsed = parse_rtcp(compound)
    assert isinstance(parsed[0], SenderReport)
    assert isinstance(parsed[1], RtcpPacket) and parsed[1].packet_type == RTCP_SDES
    sdes = parsed[1].data
    assert len(sdes) % 4 == 0 and sdes[8:10] == bytes([1, 13]) and sdes[10:23] == b"voip-sos@host"
    assert parsed[2] == RtcpPacket(RTCP_BYE, bytes([0x81, 203, 0, 1, 0, 0, 0, 1]))


def test_receiver_report_parsed() -> None:
    block = struct.pack("!IIIIII", 7, (10 << 24) | 2, 1000, 4, 0, 0)
    rr = bytes([0x81, 201, 0, 7]) + struct.pack("!I", 99) + block
    assert parse_rtcp(rr) == [ReceiverReport(99, (ReportBlock(7, 10, 2, 1000, 4, 0, 0),))]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\xc8", "RTCP packet too short"),
        (build_sr(1, 2, 3, 4, 5) + b"\x80\xc9", "RTCP packet too short"),
        (bytes([0x40, 200, 0, 0]), "RTCP version is not 2"),
        (bytes([0x80, 200, 0, 6]) + bytes(8), "RTCP length exceeds datagram"),
        (bytes([0x81, 200, 0, 6]) + bytes(24), "RTCP sender report too short"),
        (bytes([0x81, 201, 0, 1]) + bytes(4), "RTCP receiver report too short"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_rtcp(data)
    assert str(info.value) == message
