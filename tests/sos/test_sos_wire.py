"""SOS wire format: round trips, the documented example, every parse error, fuzzing."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voip_sos.errors import LocalProtocolError, RemoteProtocolError
from voip_sos.sos.wire import (
    HEADER_BYTES,
    MAX_DATAGRAM_BYTES,
    Flag,
    Message,
    MsgType,
    RejectReason,
    StatusCode,
    encode,
    mac_of,
    parse,
)

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
RID = bytes.fromhex("8f3c2a1be4d5f60718293a4b5c6d7e8f")
DOC = Path(__file__).resolve().parents[2] / "docs" / "sos-protocol.md"

SAMPLES = [
    Message(MsgType.SOS, RID, 1, 1_764_000_000_000, "10.20.30.40"),
    Message(MsgType.SOS, RID, 2, 1_764_000_000_000, "10.20.30.40", flags=Flag.TEST),
    Message(MsgType.CANCEL, RID, 3, 1, "2001:db8::7"),
    Message(MsgType.UPDATE, RID, 4, 2, "10.0.0.1", door_code="482913", parking_code="P-77", note="gate 2"),
    Message(MsgType.HEARTBEAT, RID, 0xFFFFFFFF, 2**64 - 1, "127.0.0.23"),
    Message(MsgType.SEEN, RID, 2, 5, "10.0.0.1", incident_id=42),
    Message(MsgType.RECEIPT, RID, 4, 6, "10.0.0.1", incident_id=2**64 - 1),
    Message(MsgType.REJECT, RID, 4, 7, "10.0.0.1", reason=RejectReason.CLOCK),
    Message(
        MsgType.STATUS, RID, 1, 8, "10.0.0.1", incident_id=9, status=StatusCode.CALLING, detail="calling 120"
    ),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.type.name)
def test_round_trip_and_mac(msg: Message) -> None:
    data = encode(msg, KEY)
    got = parse(data)
    assert got == msg
    assert got.verify(KEY)
    assert not got.verify(KEY[:-1] + b"\x00")
    assert data[0] == 1 and len(data) <= MAX_DATAGRAM_BYTES
    assert got.mac == mac_of(KEY, data[:-32])
    # Byte by byte: every proper prefix is refused, and so is trailing junk.
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            parse(data[:cut])
    with pytest.raises(RemoteProtocolError, match="does not match body length"):
        parse(data + b"\x00")


def _doc_block(name: str) -> bytes:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- example-{name} -->\s*```\s*([0-9a-f\s]+?)```", text)
    assert m, f"docs/sos-protocol.md lost its example-{name} block"
    return bytes.fromhex("".join(m.group(1).split()))


@pytest.mark.parametrize(
    ("block", "example"),
    [
        ("datagram", Message(MsgType.SOS, RID, 1, 1_764_000_000_000, "10.20.30.40")),
        ("receipt", Message(MsgType.RECEIPT, RID, 1, 1_764_000_000_012, "10.20.30.40", incident_id=42)),
        (
            "reject",
            Message(MsgType.REJECT, RID, 1, 1_764_000_000_012, "10.20.30.40", reason=RejectReason.CLOCK),
        ),
    ],
)
def test_documented_examples_are_what_the_code_sends(block: str, example: Message) -> None:
    key, data = _doc_block("key"), _doc_block(block)
    assert key == KEY
    assert encode(example, key) == data
    got = parse(data)
    assert got == example and got.verify(key)


def _valid(msg: Message | None = None) -> bytearray:
    return bytearray(encode(msg or SAMPLES[3], KEY))


def _with_body(body: bytes, mtype: int = MsgType.UPDATE) -> bytes:
    head = bytearray(_valid()[:HEADER_BYTES])
    head[1] = mtype
    struct.pack_into("!H", head, 48, len(body))
    return bytes(head) + body + b"\x00" * 32


def _set(offset: int, value: int) -> bytes:
    d = _valid()
    d[offset] = value
    return bytes(d)


def _ip(raw: bytes) -> bytes:
    d = _valid()
    d[32:48] = raw
    return bytes(d)


PARSE_ERRORS = [
    (b"", "empty datagram"),
    (b"\x02" + bytes(100), "unsupported version 2"),
    (b"\x01" + bytes(20), "datagram of 21 bytes is shorter than the minimum 82"),
    (b"\x01" * 1201, "datagram of 1201 bytes exceeds 1200"),
    (_set(1, 0x07), "unknown message type 0x07"),
    (_set(2, 0x06), "reserved flag bits set: 0x06"),
    (_set(2, 0x01), "TEST flag only allowed on SOS"),
    (_set(3, 0x01), "reserved byte is 0x01, must be 0"),
    (_set(49, 0xFF), r"datagram of 104 bytes does not match body length 255 \(expected 337\)"),
    (_ip(bytes(16)), "carried IP :: is not a unicast address"),
    (_ip(bytes(10) + b"\xff\xff" + bytes(4)), "carried IP 0.0.0.0 is not a unicast address"),
    (_ip(b"\xff\x02" + bytes(13) + b"\x01"), "carried IP ff02::1 is not a unicast address"),
    (_with_body(b"\x01"), "truncated field header at body offset 0"),
    (_with_body(b"\x01\x05ab"), "field 0x01 of 5 bytes runs past the body"),
    (_with_body(b"\x01\x01a\x01\x01b"), "duplicate field 0x01"),
    (_with_body(b"\x20\x01a"), "unknown field 0x20"),
    (_with_body(b"\x01\x00"), "door code is empty"),
    (_with_body(b"\x01\x02\xff\xfe"), "door code is not valid UTF-8"),
    (_with_body(b"\x03\x02a\n"), "note contains control characters"),
    (_with_body(b"\x02\xc9" + b"a" * 201), "parking code is 201 bytes, at most 200 allowed"),
    (_with_body(b""), "UPDATE carries no fields"),
    (_with_body(b"\x90\x01a"), "UPDATE carries no fields"),
    (_with_body(b"\x10\x08" + bytes(8)), r"UPDATE cannot carry field 0x10 \(incident id\)"),
    (_with_body(b"", MsgType.RECEIPT), r"RECEIPT missing field 0x10 \(incident id\)"),
    (_with_body(b"\x10\x03abc", MsgType.RECEIPT), "incident id has 3 bytes, expected 8"),
    (_with_body(b"\x11\x01\x09", MsgType.REJECT), "unknown reject reason 9"),
    (_with_body(b"\x11\x02\x01\x01", MsgType.REJECT), "reason has 2 bytes, expected 1"),
    (_with_body(b"\x10\x08" + bytes(8) + b"\x12\x01\x63", MsgType.STATUS), "unknown status 99"),
    (_with_body(b"\x10\x08" + bytes(8), MsgType.STATUS), r"STATUS missing field 0x12 \(status\)"),
]


@pytest.mark.parametrize(("data", "message"), PARSE_ERRORS, ids=[m for _, m in PARSE_ERRORS])
def test_every_parse_error_has_its_message(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        parse(data)


def test_optional_unknown_fields_are_skipped() -> None:
    got = parse(_with_body(b"\x90\x03xyz\x01\x02ab"))
    assert got.door_code == "ab"


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (Message(MsgType.CANCEL, RID, 1, 1, "10.0.0.1", flags=Flag.TEST), "TEST flag only allowed on SOS"),
        (Message(MsgType.UPDATE, RID, 1, 1, "10.0.0.1"), "UPDATE carries no fields"),
        (Message(MsgType.SOS, b"short", 1, 1, "10.0.0.1"), "request id must be 16 bytes"),
        (Message(MsgType.SOS, RID, 2**32, 1, "10.0.0.1"), "out of range"),
        (Message(MsgType.SOS, RID, 1, 1, "nowhere"), "not an IP address"),
        (Message(MsgType.UPDATE, RID, 1, 1, "10.0.0.1", note="x" * 201), "note is 201 bytes"),
        (Message(MsgType.RECEIPT, RID, 1, 1, "10.0.0.1"), "RECEIPT missing field 0x10"),
    ],
)
def test_encode_refuses_unsendable_messages(msg: Message, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        encode(msg, KEY)


def test_encode_refuses_empty_key() -> None:
    with pytest.raises(LocalProtocolError, match="empty key"):
        encode(SAMPLES[0], b"")


# -- fuzzing ------------------------------------------------------------------------------------


def _parse_or_refuse(data: bytes) -> Message | None:
    try:
        return parse(data)
    except RemoteProtocolError:
        return None


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1300))
def test_fuzz_random_bytes_never_crash(data: bytes) -> None:
    msg = _parse_or_refuse(data)
    if msg is not None:
        # Whatever the parser accepts, the encoder can send (the two agree on every rule) ...
        assert parse(encode(msg, KEY)) == msg
        # ... and random bytes never carry a valid MAC.
        assert not msg.verify(KEY)


_texts = st.text(
    alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs",), blacklist_characters="\x7f"),
    min_size=1,
    max_size=40,
)
_ips = st.one_of(
    st.ip_addresses(v=4).filter(lambda a: not a.is_unspecified and not a.is_multicast),
    st.ip_addresses(v=6).filter(
        lambda a: not a.is_unspecified and not a.is_multicast and a.ipv4_mapped is None
    ),
).map(lambda a: a.compressed)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    mtype = draw(st.sampled_from(list(MsgType)))
    base = {
        "type": mtype,
        "request_id": draw(st.binary(min_size=16, max_size=16)),
        "seq": draw(st.integers(0, 2**32 - 1)),
        "timestamp_ms": draw(st.integers(0, 2**64 - 1)),
        "ip": draw(_ips),
    }
    extra: dict[str, object] = {}
    if mtype is MsgType.SOS and draw(st.booleans()):
        extra["flags"] = Flag.TEST
    if mtype is MsgType.UPDATE:
        extra["door_code"] = draw(st.one_of(st.none(), _texts))
        extra["parking_code"] = draw(st.one_of(st.none(), _texts))
        extra["note"] = draw(_texts if not (extra["door_code"] or extra["parking_code"]) else st.none())
    if mtype in (MsgType.SEEN, MsgType.RECEIPT, MsgType.STATUS):
        extra["incident_id"] = draw(st.integers(0, 2**64 - 1))
    if mtype is MsgType.REJECT:
        extra["reason"] = draw(st.sampled_from(list(RejectReason)))
    if mtype is MsgType.STATUS:
        extra["status"] = draw(st.sampled_from(list(StatusCode)))
        extra["detail"] = draw(st.one_of(st.none(), _texts))
    return Message(**base, **extra)  # type: ignore[arg-type]


@settings(max_examples=2_000, deadline=None)
@given(messages(), st.binary(min_size=1, max_size=64))
def test_fuzz_generated_messages_round_trip(msg: Message, key: bytes) -> None:
    data = encode(msg, key)
    got = parse(data)
    assert got == msg and got.verify(key)


# The 10,000 examples the issue asks for are the random-bytes run above; mutations are also thrown at a
# running `serve` by the thousands (tests/sos/test_sos_serve.py), so 3,000 keep this one quick.
@settings(max_examples=3_000, deadline=None)
@given(messages(), st.data())
def test_fuzz_mutations_are_refused_or_fail_the_mac(msg: Message, data: st.DataObject) -> None:
    good = encode(msg, KEY)
    mutated = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, 8))
    candidate = bytes(mutated[: len(mutated) - cut] if cut else mutated)
    if candidate == good:
        return
    got = _parse_or_refuse(candidate)
    assert got is None or not got.verify(KEY)
