"""Hub protocol v1 on the wire: STB <-> home hub datagrams, their parser and their HMAC.

docs/hub-protocol.md is the specification. The framing is the SOS protocol's (docs/sos-protocol.md):

    fixed header (50 bytes) | body: TLV fields (body_len bytes) | HMAC-SHA256 (32 bytes)

with the same header layout, so one reading of a capture serves both; the message types are the
hub's own (0x2x requests, 0xAx replies) and the key is the STB-hub key, never the SOS key, so a
datagram of one protocol can never verify as the other. `parse()` does not authenticate: the
caller calls `Message.verify(key)`.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass, field

from voip_sos.errors import LocalProtocolError, RemoteProtocolError

# The same header layout and carried-IP field as the SOS protocol (docs/hub-protocol.md).
from voip_sos.sos.wire import HEADER, ip_bytes, mac_of, parse_ip

__all__ = [
    "HEADER_BYTES",
    "MAC_BYTES",
    "MAX_DATAGRAM_BYTES",
    "VERSION",
    "FieldType",
    "Flag",
    "Message",
    "MsgType",
    "PartState",
    "encode",
    "mac_of",
    "parse",
]

VERSION = 1
HEADER_BYTES = 50
MAC_BYTES = 32
MIN_DATAGRAM_BYTES = HEADER_BYTES + MAC_BYTES
# Same bound as the SOS protocol: one IPv6 minimum-MTU packet, never fragmented (RFC 8200 §5).
MAX_DATAGRAM_BYTES = 1200
MAX_TEXT_BYTES = 64


class MsgType(enum.IntEnum):
    """Message types; requests (STB -> hub) 0x2x, replies (hub -> STB) 0xAx."""

    INSTRUCTION = 0x21
    REVOKE = 0x22
    CODES = 0xA1
    REVOKED = 0xA2


REQUEST_TYPES = frozenset({MsgType.INSTRUCTION, MsgType.REVOKE})


class Flag(enum.IntFlag):
    """Header flag bits; every other bit is reserved and must be zero."""

    NONE = 0x00
    TEST = 0x01
    """INSTRUCTION: a test press (the hub still issues real codes: the door is real)."""
    FINAL = 0x02
    """CODES / REVOKED: nothing more will come for this request; the STB stops retransmitting."""


class PartState(enum.IntEnum):
    """Where one part (door code, parking pass) of an instruction stands."""

    PENDING = 1
    ISSUED = 2
    FAILED = 3
    NOT_CONFIGURED = 4


class FieldType(enum.IntEnum):
    """TLV field types. 0x00-0x7F must be understood; 0x80-0xFF may be skipped when unknown."""

    DOOR_CODE = 0x01
    PARKING_CODE = 0x02
    DOOR_STATE = 0x03
    PARKING_STATE = 0x04
    DOOR_VALID_UNTIL = 0x05
    PARKING_VALID_UNTIL = 0x06
    CLEARED = 0x07
    FAILED = 0x08


_NAMES = {
    FieldType.DOOR_CODE: "door code",
    FieldType.PARKING_CODE: "parking code",
    FieldType.DOOR_STATE: "door state",
    FieldType.PARKING_STATE: "parking state",
    FieldType.DOOR_VALID_UNTIL: "door valid until",
    FieldType.PARKING_VALID_UNTIL: "parking valid until",
    FieldType.CLEARED: "cleared",
    FieldType.FAILED: "failed",
}
_ATTR = {ft: name.replace(" ", "_") for ft, name in _NAMES.items()}
_TEXT = frozenset({FieldType.DOOR_CODE, FieldType.PARKING_CODE})
_STATE = frozenset({FieldType.DOOR_STATE, FieldType.PARKING_STATE})
_U64 = frozenset({FieldType.DOOR_VALID_UNTIL, FieldType.PARKING_VALID_UNTIL})
_U8 = frozenset({FieldType.CLEARED, FieldType.FAILED})
_ALLOWED: dict[MsgType, frozenset[FieldType]] = {
    MsgType.INSTRUCTION: frozenset(),
    MsgType.REVOKE: frozenset(),
    MsgType.CODES: frozenset(_TEXT | _STATE | _U64),
    MsgType.REVOKED: frozenset(_U8),
}
_REQUIRED: dict[MsgType, frozenset[FieldType]] = {
    MsgType.CODES: frozenset(_STATE),
    MsgType.REVOKED: frozenset(_U8),
}
_FLAGS: dict[MsgType, Flag] = {
    MsgType.INSTRUCTION: Flag.TEST,
    MsgType.REVOKE: Flag.NONE,
    MsgType.CODES: Flag.FINAL,
    MsgType.REVOKED: Flag.FINAL,
}


@dataclass(frozen=True, slots=True)
class Message:
    """One hub-protocol datagram, parsed or about to be encoded."""

    type: MsgType
    """What the datagram is."""
    request_id: bytes
    """16 random bytes naming the STB's request; replies echo it."""
    seq: int
    """STB's sequence number (u32), +1 per new request; replies echo it."""
    timestamp_ms: int
    """Sender's wall clock, ms since 1970 UTC (u64); re-stamped on every retransmission."""
    ip: str
    """The STB's IP, in requests and replies alike (a reply for one STB cannot serve another)."""
    flags: Flag = Flag.NONE
    """TEST on INSTRUCTION, FINAL on replies."""
    door_code: str | None = None
    """CODES: the temporary door code, once the lock confirmed it."""
    parking_code: str | None = None
    """CODES: the temporary parking pass."""
    door_state: PartState | None = None
    """CODES: where the door code stands."""
    parking_state: PartState | None = None
    """CODES: where the parking pass stands."""
    door_valid_until: int | None = None
    """CODES: door code expiry, ms since 1970 UTC."""
    parking_valid_until: int | None = None
    """CODES: parking pass expiry, ms since 1970 UTC."""
    cleared: int | None = None
    """REVOKED: temporary codes cleared and confirmed by the lock."""
    failed: int | None = None
    """REVOKED: temporary codes the lock did not confirm cleared."""
    signed: bytes = field(default=b"", repr=False, compare=False)
    """The bytes the MAC covers (parsed messages only)."""
    mac: bytes = field(default=b"", repr=False, compare=False)
    """The MAC as received (parsed messages only)."""

    @property
    def final(self) -> bool:
        return bool(self.flags & Flag.FINAL)

    def verify(self, key: bytes) -> bool:
        """True when the received MAC is HMAC-SHA256(key, header + body); constant-time compare."""
        if not self.signed or not key:
            return False
        return hmac.compare_digest(mac_of(key, self.signed), self.mac)


def _present(msg: Message) -> dict[FieldType, object]:
    return {ft: getattr(msg, attr) for ft, attr in _ATTR.items() if getattr(msg, attr) is not None}


def _check_fields(mtype: MsgType, present: set[FieldType], err: type[Exception]) -> None:
    for ftype in sorted(present - _ALLOWED[mtype]):
        raise err(f"{mtype.name} cannot carry field 0x{ftype:02x} ({_NAMES[ftype]})")
    for ftype in sorted(_REQUIRED.get(mtype, frozenset()) - present):
        raise err(f"{mtype.name} missing field 0x{ftype:02x} ({_NAMES[ftype]})")


def _check_text(ftype: FieldType, raw: bytes, err: type[Exception]) -> str:
    name = _NAMES[ftype]
    if not raw:
        raise err(f"{name} is empty")
    if len(raw) > MAX_TEXT_BYTES:
        raise err(f"{name} is {len(raw)} bytes, at most {MAX_TEXT_BYTES} allowed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise err(f"{name} is not valid UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise err(f"{name} contains control characters")
    return text


def encode(msg: Message, key: bytes) -> bytes:
    """The datagram for `msg`, MAC'd with `key`. Raises LocalProtocolError for an unsendable message."""
    if not key:
        raise LocalProtocolError("cannot sign a message with an empty key")
    if len(msg.request_id) != 16:
        raise LocalProtocolError("request id must be 16 bytes")
    if not 0 <= msg.seq <= 0xFFFFFFFF or not 0 <= msg.timestamp_ms <= 0xFFFFFFFFFFFFFFFF:
        raise LocalProtocolError("sequence number or timestamp out of range")
    if int(msg.flags) & ~int(_FLAGS[msg.type]):
        raise LocalProtocolError(f"flags 0x{int(msg.flags):02x} not allowed on {msg.type.name}")
    present = _present(msg)
    _check_fields(msg.type, set(present), LocalProtocolError)
    parts: list[bytes] = []
    for ftype, value in sorted(present.items()):
        if ftype in _TEXT:
            assert isinstance(value, str)
            raw = value.encode("utf-8")
            _check_text(ftype, raw, LocalProtocolError)
        elif ftype in _U64:
            assert isinstance(value, int)
            raw = value.to_bytes(8, "big")
        else:
            assert isinstance(value, int)
            if not 0 <= value <= 255:
                raise LocalProtocolError(f"{_NAMES[ftype]} out of range: {value}")
            raw = bytes((value,))
        parts.append(bytes((ftype, len(raw))) + raw)
    body = b"".join(parts)
    header = HEADER.pack(
        VERSION,
        msg.type,
        int(msg.flags),
        0,
        msg.request_id,
        msg.seq,
        msg.timestamp_ms,
        ip_bytes(msg.ip),
        len(body),
    )
    data = header + body
    if len(data) + MAC_BYTES > MAX_DATAGRAM_BYTES:
        raise LocalProtocolError(f"message of {len(data) + MAC_BYTES} bytes exceeds {MAX_DATAGRAM_BYTES}")
    return data + mac_of(key, data)


def parse(data: bytes) -> Message:
    """Parse one datagram (not authenticated). Raises RemoteProtocolError naming the first fault."""
    size = len(data)
    if size > MAX_DATAGRAM_BYTES:
        raise RemoteProtocolError(f"datagram of {size} bytes exceeds {MAX_DATAGRAM_BYTES}")
    if size < 1:
        raise RemoteProtocolError("empty datagram")
    if data[0] != VERSION:
        raise RemoteProtocolError(f"unsupported version {data[0]}")
    if size < MIN_DATAGRAM_BYTES:
        raise RemoteProtocolError(
            f"datagram of {size} bytes is shorter than the minimum {MIN_DATAGRAM_BYTES}"
        )
    _, raw_type, raw_flags, reserved, request_id, seq, ts_ms, raw_ip, body_len = HEADER.unpack_from(data)
    try:
        mtype = MsgType(raw_type)
    except ValueError:
        raise RemoteProtocolError(f"unknown message type 0x{raw_type:02x}") from None
    if raw_flags & ~int(_FLAGS[mtype]):
        raise RemoteProtocolError(f"flags 0x{raw_flags:02x} not allowed on {mtype.name}")
    if reserved:
        raise RemoteProtocolError(f"reserved byte is 0x{reserved:02x}, must be 0")
    expected = HEADER_BYTES + body_len + MAC_BYTES
    if size != expected:
        raise RemoteProtocolError(
            f"datagram of {size} bytes does not match body length {body_len} (expected {expected})"
        )
    ip = parse_ip(raw_ip)
    end = HEADER_BYTES + body_len
    values = _parse_body(mtype, data[HEADER_BYTES:end])
    return Message(
        type=mtype,
        request_id=request_id,
        seq=seq,
        timestamp_ms=ts_ms,
        ip=ip,
        flags=Flag(raw_flags),
        signed=data[:end],
        mac=data[end:],
        **values,  # type: ignore[arg-type]
    )


def _parse_body(mtype: MsgType, body: bytes) -> dict[str, object]:
    values: dict[str, object] = {}
    seen: set[FieldType] = set()
    raw_seen: set[int] = set()
    pos = 0
    while pos < len(body):
        if pos + 2 > len(body):
            raise RemoteProtocolError(f"truncated field header at body offset {pos}")
        ftype, flen = body[pos], body[pos + 1]
        value = body[pos + 2 : pos + 2 + flen]
        if len(value) != flen:
            raise RemoteProtocolError(f"field 0x{ftype:02x} of {flen} bytes runs past the body")
        pos += 2 + flen
        if ftype in raw_seen:
            raise RemoteProtocolError(f"duplicate field 0x{ftype:02x}")
        raw_seen.add(ftype)
        try:
            known = FieldType(ftype)
        except ValueError:
            if ftype & 0x80:
                continue  # comprehension-optional: a later version's field
            raise RemoteProtocolError(f"unknown field 0x{ftype:02x}") from None
        seen.add(known)
        values[_ATTR[known]] = _parse_field(known, value)
    _check_fields(mtype, seen, RemoteProtocolError)
    return values


def _parse_field(ftype: FieldType, value: bytes) -> object:
    name = _NAMES[ftype]
    if ftype in _TEXT:
        return _check_text(ftype, value, RemoteProtocolError)
    if ftype in _U64:
        if len(value) != 8:
            raise RemoteProtocolError(f"{name} has {len(value)} bytes, expected 8")
        return int.from_bytes(value, "big")
    if len(value) != 1:
        raise RemoteProtocolError(f"{name} has {len(value)} bytes, expected 1")
    if ftype in _STATE:
        try:
            return PartState(value[0])
        except ValueError:
            raise RemoteProtocolError(f"unknown {name} {value[0]}") from None
    return value[0]
