"""SOS protocol v1 on the wire: the byte layout of every datagram, its parser and its HMAC.

docs/sos-protocol.md is the specification; this module is its only implementation. A datagram is

    fixed header (50 bytes) | body: TLV fields (body_len bytes) | HMAC-SHA256 (32 bytes)

and the HMAC covers every byte before it. Parsing never trusts a length it has not checked, and every
failure raises RemoteProtocolError with an exact message. `parse()` does not authenticate: the
caller picks the key (the STB's secret, or the operator key) and calls `Message.verify(key)`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass, field

from voip_sos.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "HEADER_BYTES",
    "MAC_BYTES",
    "MAX_DATAGRAM_BYTES",
    "MIN_DATAGRAM_BYTES",
    "REQUEST_TYPES",
    "VERSION",
    "FieldType",
    "Flag",
    "Message",
    "MsgType",
    "RejectReason",
    "StatusCode",
    "encode",
    "mac_of",
    "parse",
]

VERSION = 1
HEADER_BYTES = 50
MAC_BYTES = 32
MIN_DATAGRAM_BYTES = HEADER_BYTES + MAC_BYTES
# Fits one IPv6 packet on a 1,280-byte minimum-MTU link with room for IP and UDP headers (RFC 8200 §5),
# so no datagram is ever fragmented.
MAX_DATAGRAM_BYTES = 1200
MAX_TEXT_BYTES = 200

# version u8 | type u8 | flags u8 | reserved u8 | request id 16 | seq u32 | timestamp ms u64 |
# carried IP 16 | body length u16 -- all big-endian (network order).
HEADER = struct.Struct("!BBBB16sIQ16sH")
assert HEADER.size == HEADER_BYTES


class MsgType(enum.IntEnum):
    """Message types; requests (STB -> backend) below 0x80, replies (backend -> STB) from 0x80."""

    SOS = 0x01
    CANCEL = 0x02
    UPDATE = 0x03
    HEARTBEAT = 0x04
    SEEN = 0x05
    RECEIPT = 0x81
    REJECT = 0x82
    STATUS = 0x83


REQUEST_TYPES = frozenset({MsgType.SOS, MsgType.CANCEL, MsgType.UPDATE, MsgType.HEARTBEAT})


class Flag(enum.IntFlag):
    """Header flag bits; every other bit is reserved and must be zero."""

    NONE = 0x00
    TEST = 0x01


class FieldType(enum.IntEnum):
    """TLV field types. 0x00-0x7F must be understood; 0x80-0xFF may be skipped when unknown."""

    DOOR_CODE = 0x01
    PARKING_CODE = 0x02
    NOTE = 0x03
    INCIDENT_ID = 0x10
    REASON = 0x11
    STATUS = 0x12
    DETAIL = 0x13


class RejectReason(enum.IntEnum):
    """Why an authenticated request was refused (carried in REJECT's REASON field)."""

    CLOCK = 1
    NO_INCIDENT = 2
    UNSUPPORTED = 3


class StatusCode(enum.IntEnum):
    """Progress of an incident as the TV should show it (STATUS's STATUS field)."""

    NOBODY_REACHED = 1
    CALLING = 2
    CONFIRMED_CENTRE = 3
    CONFIRMED_CONTACT = 4
    CLOSED = 5


_TEXT_FIELDS = frozenset({FieldType.DOOR_CODE, FieldType.PARKING_CODE, FieldType.NOTE, FieldType.DETAIL})
_FIELD_NAMES = {
    FieldType.DOOR_CODE: "door code",
    FieldType.PARKING_CODE: "parking code",
    FieldType.NOTE: "note",
    FieldType.INCIDENT_ID: "incident id",
    FieldType.REASON: "reason",
    FieldType.STATUS: "status",
    FieldType.DETAIL: "detail",
}
# Which fields each type may carry, and which it must.
_ALLOWED: dict[MsgType, frozenset[FieldType]] = {
    MsgType.SOS: frozenset(),
    MsgType.CANCEL: frozenset(),
    MsgType.UPDATE: frozenset({FieldType.DOOR_CODE, FieldType.PARKING_CODE, FieldType.NOTE}),
    MsgType.HEARTBEAT: frozenset(),
    MsgType.SEEN: frozenset({FieldType.INCIDENT_ID}),
    MsgType.RECEIPT: frozenset({FieldType.INCIDENT_ID}),
    MsgType.REJECT: frozenset({FieldType.REASON}),
    MsgType.STATUS: frozenset({FieldType.INCIDENT_ID, FieldType.STATUS, FieldType.DETAIL}),
}
_REQUIRED: dict[MsgType, frozenset[FieldType]] = {
    MsgType.SEEN: frozenset({FieldType.INCIDENT_ID}),
    MsgType.RECEIPT: frozenset({FieldType.INCIDENT_ID}),
    MsgType.REJECT: frozenset({FieldType.REASON}),
    MsgType.STATUS: frozenset({FieldType.INCIDENT_ID, FieldType.STATUS}),
}


@dataclass(frozen=True, slots=True)
class Message:
    """One SOS-protocol datagram, parsed or about to be encoded."""

    type: MsgType
    """What the datagram is (SOS, RECEIPT, ...)."""
    request_id: bytes
    """16 random bytes naming the request; replies echo the request's, SEEN echoes the STATUS's."""
    seq: int
    """Sender's sequence number (u32); replies echo the request's, STATUS numbers its updates."""
    timestamp_ms: int
    """Sender's wall clock, milliseconds since 1970-01-01 UTC (u64)."""
    ip: str
    """The STB's fixed IP (IP-x1), compressed text form, in requests and in replies alike."""
    flags: Flag = Flag.NONE
    """TEST on SOS; nothing else yet."""
    door_code: str | None = None
    """UPDATE: temporary door code from the home hub (F8)."""
    parking_code: str | None = None
    """UPDATE: temporary parking pass (F13)."""
    note: str | None = None
    """UPDATE: free text."""
    incident_id: int | None = None
    """RECEIPT, STATUS, SEEN: the incident (u64)."""
    reason: RejectReason | None = None
    """REJECT: why."""
    status: StatusCode | None = None
    """STATUS: progress of the incident."""
    detail: str | None = None
    """STATUS: short text for the TV (optional)."""
    signed: bytes = field(default=b"", repr=False, compare=False)
    """The bytes the MAC covers (parsed messages only)."""
    mac: bytes = field(default=b"", repr=False, compare=False)
    """The MAC as received (parsed messages only)."""

    @property
    def test(self) -> bool:
        return bool(self.flags & Flag.TEST)

    def verify(self, key: bytes) -> bool:
        """True when the received MAC is HMAC-SHA256(key, header + body); constant-time compare."""
        if not self.signed or not key:
            return False
        return hmac.compare_digest(mac_of(key, self.signed), self.mac)


def mac_of(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


# ---------------------------------------------------------------------------------------------
# Encoding


def ip_bytes(ip: str) -> bytes:
    """The 16-byte carried-IP field (IPv4 as IPv4-mapped IPv6); shared with the hub protocol."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise LocalProtocolError(f"not an IP address: {ip!r}") from None
    if isinstance(addr, ipaddress.IPv4Address):
        # IPv4-mapped IPv6 address, RFC 4291 §2.5.5.2.
        return b"\x00" * 10 + b"\xff\xff" + addr.packed
    return addr.packed


def _tlv(ftype: FieldType, value: bytes) -> bytes:
    if len(value) > 255:
        raise LocalProtocolError(f"{_FIELD_NAMES[ftype]} is longer than 255 bytes")
    return bytes((ftype, len(value))) + value


def _body(msg: Message) -> bytes:
    parts: list[bytes] = []
    texts = (
        (FieldType.DOOR_CODE, msg.door_code),
        (FieldType.PARKING_CODE, msg.parking_code),
        (FieldType.NOTE, msg.note),
    )
    for ftype, text in texts:
        if text is not None:
            parts.append(_tlv(ftype, _check_text(ftype, text.encode("utf-8"))))
    if msg.incident_id is not None:
        parts.append(_tlv(FieldType.INCIDENT_ID, msg.incident_id.to_bytes(8, "big")))
    if msg.reason is not None:
        parts.append(_tlv(FieldType.REASON, bytes((msg.reason,))))
    if msg.status is not None:
        parts.append(_tlv(FieldType.STATUS, bytes((msg.status,))))
    if msg.detail is not None:
        parts.append(_tlv(FieldType.DETAIL, _check_text(FieldType.DETAIL, msg.detail.encode("utf-8"))))
    return b"".join(parts)


def encode(msg: Message, key: bytes) -> bytes:
    """The datagram for `msg`, MAC'd with `key`. Raises LocalProtocolError for an unsendable message."""
    if not key:
        raise LocalProtocolError("cannot sign a message with an empty key")
    if len(msg.request_id) != 16:
        raise LocalProtocolError("request id must be 16 bytes")
    if not 0 <= msg.seq <= 0xFFFFFFFF or not 0 <= msg.timestamp_ms <= 0xFFFFFFFFFFFFFFFF:
        raise LocalProtocolError("sequence number or timestamp out of range")
    if msg.test and msg.type is not MsgType.SOS:
        raise LocalProtocolError("TEST flag only allowed on SOS")
    body = _body(msg)
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
    _check_fields(msg.type, _present(msg))
    if len(data) + MAC_BYTES > MAX_DATAGRAM_BYTES:
        raise LocalProtocolError(f"message of {len(data) + MAC_BYTES} bytes exceeds {MAX_DATAGRAM_BYTES}")
    return data + mac_of(key, data)


def _present(msg: Message) -> set[FieldType]:
    values = {
        FieldType.DOOR_CODE: msg.door_code,
        FieldType.PARKING_CODE: msg.parking_code,
        FieldType.NOTE: msg.note,
        FieldType.INCIDENT_ID: msg.incident_id,
        FieldType.REASON: msg.reason,
        FieldType.STATUS: msg.status,
        FieldType.DETAIL: msg.detail,
    }
    return {k for k, v in values.items() if v is not None}


def _check_fields(mtype: MsgType, present: set[FieldType], err: type[Exception] = LocalProtocolError) -> None:
    for ftype in sorted(present - _ALLOWED[mtype]):
        raise err(f"{mtype.name} cannot carry field 0x{ftype:02x} ({_FIELD_NAMES[ftype]})")
    for ftype in sorted(_REQUIRED.get(mtype, frozenset()) - present):
        raise err(f"{mtype.name} missing field 0x{ftype:02x} ({_FIELD_NAMES[ftype]})")
    if mtype is MsgType.UPDATE and not present:
        raise err("UPDATE carries no fields")


def _check_text(ftype: FieldType, raw: bytes, err: type[Exception] = LocalProtocolError) -> bytes:
    name = _FIELD_NAMES[ftype]
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
    return raw


# ---------------------------------------------------------------------------------------------
# Parsing


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
    if raw_flags & ~int(Flag.TEST):
        raise RemoteProtocolError(f"reserved flag bits set: 0x{raw_flags:02x}")
    flags = Flag(raw_flags)
    if flags & Flag.TEST and mtype is not MsgType.SOS:
        raise RemoteProtocolError("TEST flag only allowed on SOS")
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
        flags=flags,
        signed=data[:end],
        mac=data[end:],
        **values,  # type: ignore[arg-type]
    )


def parse_ip(raw: bytes) -> str:
    """The carried-IP field back to text; refuses unspecified and multicast addresses."""
    addr = ipaddress.IPv6Address(raw)
    mapped = addr.ipv4_mapped
    shown: ipaddress.IPv4Address | ipaddress.IPv6Address = mapped if mapped is not None else addr
    if shown.is_unspecified or shown.is_multicast:
        raise RemoteProtocolError(f"carried IP {shown.compressed} is not a unicast address")
    return shown.compressed


def _parse_body(mtype: MsgType, body: bytes) -> dict[str, object]:
    values: dict[str, object] = {}
    seen: set[int] = set()
    pos = 0
    while pos < len(body):
        if pos + 2 > len(body):
            raise RemoteProtocolError(f"truncated field header at body offset {pos}")
        ftype, flen = body[pos], body[pos + 1]
        value = body[pos + 2 : pos + 2 + flen]
        if len(value) != flen:
            raise RemoteProtocolError(f"field 0x{ftype:02x} of {flen} bytes runs past the body")
        pos += 2 + flen
        if ftype in seen:
            raise RemoteProtocolError(f"duplicate field 0x{ftype:02x}")
        seen.add(ftype)
        try:
            known = FieldType(ftype)
        except ValueError:
            if ftype & 0x80:
                continue  # comprehension-optional: a later version's field we may ignore
            raise RemoteProtocolError(f"unknown field 0x{ftype:02x}") from None
        values.update(_parse_field(known, value))
    present = {FieldType(f) for f in seen if f in FieldType._value2member_map_}
    _check_fields(mtype, present, RemoteProtocolError)
    return values


def _parse_field(ftype: FieldType, value: bytes) -> dict[str, object]:
    name = _FIELD_NAMES[ftype]
    if ftype in _TEXT_FIELDS:
        text = _check_text(ftype, value, RemoteProtocolError).decode("utf-8")
        return {name.replace(" ", "_"): text}
    if ftype is FieldType.INCIDENT_ID:
        if len(value) != 8:
            raise RemoteProtocolError(f"{name} has {len(value)} bytes, expected 8")
        return {"incident_id": int.from_bytes(value, "big")}
    if len(value) != 1:
        raise RemoteProtocolError(f"{name} has {len(value)} bytes, expected 1")
    if ftype is FieldType.REASON:
        try:
            return {"reason": RejectReason(value[0])}
        except ValueError:
            raise RemoteProtocolError(f"unknown reject reason {value[0]}") from None
    try:
        return {"status": StatusCode(value[0])}
    except ValueError:
        raise RemoteProtocolError(f"unknown status {value[0]}") from None
