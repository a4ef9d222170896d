"""RTP packet parse/serialize (RFC 3550 §5.1): round trips, every parser error, RTCP demultiplexing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voip_sos.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from voip_sos.rtp.packet import RtpPacket, is_rtcp

# A G.711 packet as a PBX sends it: V=2, M=1, PT=8, seq 0x1234, ts 0xdeadbeef, ssrc 0x01020304.
WIRE = bytes.fromhex("80881234deadbeef01020304") + b"\xd5" * 160


def test_parse_known_bytes() -> None:
    p = RtpPacket.parse(WIRE)
    assert (p.payload_type, p.marker, p.sequence_number, p.timestamp, p.ssrc) == (
        8,
        True,
        0x1234,
        0xDEADBEEF,
        0x01020304,
    )
    assert p.payload == b"\xd5" * 160
    assert p.serialize() == WIRE


def test_csrc_extension_padding_round_trip() -> None:
    p = RtpPacket(
        payload_type=0,
        sequence_number=65535,
        timestamp=2**32 - 1,
        ssrc=7,
        payload=b"abc",
        csrc=(1, 2, 3),
        extension_profile=0xBEDE,
        extension=b"\x10\xff\x00\x00",
        padding=5,
    )
    wire = p.serialize()
    assert wire[0] == 0x80 | 0x20 | 0x10 | 3
    assert len(wire) == 12 + 12 + 4 + 4 + 3 + 5
    assert wire[-1] == 5
    assert RtpPacket.parse(wire) == p


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension_profile=st.none() | st.integers(0, 0xFFFF),
    extension=st.binary(max_size=64).map(lambda b: b[: len(b) - len(b) % 4]),
    padding=st.integers(0, 255),
).filter(lambda p: p.extension_profile is not None or not p.extension)


@given(packets)
def test_round_trip_property(p: RtpPacket) -> None:
    assert RtpPacket.parse(p.serialize()) == p


@settings(max_examples=2000)
@given(st.binary(max_size=80))
def test_fuzz_raises_only_protocol_errors(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except ProtocolError as exc:
        assert isinstance(exc, RemoteProtocolError)
        return
    # Whatever parses re-serializes to the same bytes (padding octets other than the count are zeros).
    if not p.padding:
        assert p.serialize() == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x08\x00", "RTP packet too short"),
        (bytes.fromhex("40080001000000010000000100"), "RTP version is not 2"),
        (bytes.fromhex("a0080001000000010000000100"), "RTP padding length is zero"),
        (bytes.fromhex("82080001000000010000000100000000"), "RTP CSRC list truncated"),
        (bytes.fromhex("9008000100000001000000010000"), "RTP header extension truncated"),
        (bytes.fromhex("90080001000000010000000100000002abcd"), "RTP header extension truncated"),
        (bytes.fromhex("a008000100000001000000010000000a"), "RTP padding longer than the packet"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        RtpPacket.parse(data)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (RtpPacket(128, 0, 0, 0), "RTP payload type 128 out of range"),
        (RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))), "RTP CSRC list longer than 15"),
        (
            RtpPacket(0, 0, 0, 0, extension_profile=1, extension=b"abc"),
            "RTP header extension must be a multiple of 4 octets",
        ),
        (RtpPacket(0, 0, 0, 0, padding=256), "RTP padding 256 out of range"),
    ],
)
def test_serialize_errors(packet: RtpPacket, message: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        packet.serialize()
    assert str(info.value) == message


def test_is_rtcp_tells_rtcp_from_rtp() -> None:
    sr = struct.pack("!BBH", 0x80, 200, 6) + bytes(24)
    assert is_rtcp(sr)
    assert not is_rtcp(WIRE)
    assert not is_rtcp(b"\x80")
