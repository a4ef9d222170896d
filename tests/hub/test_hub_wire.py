"""Hub protocol wire format: the documented examples, round trips, and every parse error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voip_sos.errors import LocalProtocolError, RemoteProtocolError
from voip_sos.hub import wire
from voip_sos.hub.wire import Flag, Message, MsgType, PartState, encode, parse

DOC = (Path(__file__).resolve().parents[2] / "docs" / "hub-protocol.md").read_text(encoding="utf-8")
KEY = bytes(range(32))
RID = bytes.fromhex("5b1e0c7d9a2f48e3b6c4d1a0f9e8d7c6")


def doc_block(name: str) -> bytes:
    m = re.search(rf"<!-- {name} -->\s*```\n(.*?)```", DOC, re.S)
    assert m, name
    return bytes.fromhex("".join(m.group(1).split()))


def test_documented_examples_are_what_the_code_sends() -> None:
    assert doc_block("example-key") == KEY
    ins = Message(MsgType.INSTRUCTION, RID, 7, 1_764_000_000_000, "192.168.1.20")
    assert encode(ins, KEY) == doc_block("example-instruction")
    codes = Message(
        MsgType.CODES,
        RID,
        7,
        1_764_000_000_180,
        "192.168.1.20",
        door_code="482913",
        door_state=PartState.ISSUED,
        parking_state=PartState.PENDING,
        door_valid_until=1_764_014_400_000,
    )
    data = doc_block("example-codes")
    assert encode(codes, KEY) == data
    parsed = parse(data)
    assert parsed == codes and parsed.verify(KEY) and not parsed.final
    assert not parsed.verify(bytes(32))


texts = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64)


@given(
    door=st.none() | texts,
    park=st.none() | texts,
    states=st.tuples(st.sampled_from(PartState), st.sampled_from(PartState)),
    until=st.none() | st.integers(0, 2**64 - 1),
    final=st.booleans(),
    seq=st.integers(0, 2**32 - 1),
    ip=st.sampled_from(["10.0.0.1", "2001:db8::7", "192.168.1.20"]),
)
def test_codes_round_trip(
    door: str | None,
    park: str | None,
    states: tuple[PartState, PartState],
    until: int | None,
    final: bool,
    seq: int,
    ip: str,
) -> None:
    msg = Message(
        MsgType.CODES,
        RID,
        seq,
        1,
        ip,
        flags=Flag.FINAL if final else Flag.NONE,
        door_code=door,
        parking_code=park,
        door_state=states[0],
        parking_state=states[1],
        parking_valid_until=until,
    )
    data = encode(msg, KEY)
    assert parse(data) == msg and parse(data).verify(KEY)


def test_revoked_round_trip() -> None:
    msg = Message(MsgType.REVOKED, RID, 3, 5, "10.1.2.3", flags=Flag.FINAL, cleared=2, failed=1)
    assert parse(encode(msg, KEY)) == msg


def _raw(
    mtype: int = 0x21, flags: int = 0, reserved: int = 0, body: bytes = b"", ip: bytes | None = None
) -> bytes:
    ip = ip if ip is not None else b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 1])
    head = wire.HEADER.pack(1, mtype, flags, reserved, RID, 1, 2, ip, len(body))
    data = head + body
    return data + wire.mac_of(KEY, data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty datagram"),
        (b"\x02" + bytes(90), "unsupported version 2"),
        (b"\x01" + bytes(20), "datagram of 21 bytes is shorter than the minimum 82"),
        (bytes(1201), "datagram of 1201 bytes exceeds 1200"),
        (_raw(mtype=0x01), "unknown message type 0x01"),
        (_raw(flags=0x02), "flags 0x02 not allowed on INSTRUCTION"),
        (_raw(reserved=1), "reserved byte is 0x01, must be 0"),
        (_raw() + b"x", "datagram of 83 bytes does not match body length 0 (expected 82)"),
        (_raw(ip=bytes(16)), "carried IP :: is not a unicast address"),
        (_raw(body=b"\x01\x01x"), "INSTRUCTION cannot carry field 0x01 (door code)"),
        (_raw(mtype=0xA1, body=b"\x03\x01\x02"), "CODES missing field 0x04 (parking state)"),
        (_raw(mtype=0xA1, body=b"\x03"), "truncated field header at body offset 0"),
        (_raw(mtype=0xA1, body=b"\x03\x05\x02"), "field 0x03 of 5 bytes runs past the body"),
        (_raw(mtype=0xA1, body=b"\x03\x01\x02\x03\x01\x02"), "duplicate field 0x03"),
        (_raw(mtype=0xA1, body=b"\x40\x00"), "unknown field 0x40"),
        (_raw(mtype=0xA1, body=b"\x03\x01\x09\x04\x01\x01"), "unknown door state 9"),
        (_raw(mtype=0xA1, body=b"\x03\x02\x01\x01\x04\x01\x01"), "door state has 2 bytes, expected 1"),
        (
            _raw(mtype=0xA1, body=b"\x03\x01\x01\x04\x01\x01\x05\x01\x00"),
            "door valid until has 1 bytes, expected 8",
        ),
        (_raw(mtype=0xA1, body=b"\x01\x00\x03\x01\x01\x04\x01\x01"), "door code is empty"),
        (_raw(mtype=0xA1, body=b"\x01\x01\xff\x03\x01\x01\x04\x01\x01"), "door code is not valid UTF-8"),
        (
            _raw(mtype=0xA1, body=b"\x01\x01\x07\x03\x01\x01\x04\x01\x01"),
            "door code contains control characters",
        ),
        (
            _raw(mtype=0xA1, body=b"\x01\x41" + b"1" * 65 + b"\x03\x01\x01\x04\x01\x01"),
            "door code is 65 bytes, at most 64 allowed",
        ),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        parse(data)
    assert str(exc.value) == message


def test_unknown_optional_field_is_skipped_and_trailing_or_short_data_rejected() -> None:
    data = _raw(mtype=0xA1, body=b"\x03\x01\x02\x04\x01\x04\x90\x02ab")
    msg = parse(data)
    assert (
        msg.door_state is PartState.ISSUED
        and msg.parking_state is PartState.NOT_CONFIGURED
        and msg.verify(KEY)
    )
    for cut in range(1, len(data)):
        with pytest.raises(RemoteProtocolError):
            parse(data[:cut])


def test_encode_refuses_what_it_cannot_send() -> None:
    with pytest.raises(LocalProtocolError, match="empty key"):
        encode(Message(MsgType.INSTRUCTION, RID, 1, 1, "10.0.0.1"), b"")
    with pytest.raises(LocalProtocolError, match="request id must be 16 bytes"):
        encode(Message(MsgType.INSTRUCTION, b"x", 1, 1, "10.0.0.1"), KEY)
    with pytest.raises(LocalProtocolError, match="not allowed on REVOKE"):
        encode(Message(MsgType.REVOKE, RID, 1, 1, "10.0.0.1", flags=Flag.TEST), KEY)
    with pytest.raises(LocalProtocolError, match="CODES missing field 0x03"):
        encode(Message(MsgType.CODES, RID, 1, 1, "10.0.0.1"), KEY)
    with pytest.raises(LocalProtocolError, match="not an IP address"):
        encode(Message(MsgType.INSTRUCTION, RID, 1, 1, "hub.local"), KEY)
