"""RTP data packets (RFC 3550 §5.1): parse from bytes, serialize to bytes, nothing else."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from voip_sos.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["RTP_HEADER_BYTES", "RTP_VERSION", "RtpPacket", "is_rtcp"]

RTP_VERSION = 2
RTP_HEADER_BYTES = 12
_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet; `payload` excludes any padding."""

    payload_type: int
    """7-bit payload type (RFC 3551 static or SDP-negotiated dynamic)."""
    sequence_number: int
    """16-bit sequence number."""
    timestamp: int
    """32-bit media timestamp (8000 Hz for G.711 and telephone-event)."""
    ssrc: int
    """32-bit synchronisation source."""
    payload: bytes = b""
    """Payload octets, padding removed."""
    marker: bool = False
    """Marker bit: first packet of a talkspurt (RFC 3551 §4.1) or of a DTMF event (RFC 4733 §2.5.1.1)."""
    csrc: tuple[int, ...] = ()
    """Contributing sources, at most 15."""
    extension_profile: int | None = None
    """16-bit profile of the header extension (RFC 3550 §5.3.1), None when there is none."""
    extension: bytes = b""
    """Header extension data, a multiple of 4 octets."""
    padding: int = 0
    """Padding octets to append when serialized (0 = no padding); kept from parse for round trips."""

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; raises RemoteProtocolError with an exact message."""
        if len(data) < RTP_HEADER_BYTES:
            raise RemoteProtocolError("RTP packet too short")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise RemoteProtocolError("RTP version is not 2")
        end = len(data)
        padding = 0
        if b0 & 0x20:
            # RFC 3550 §5.1: the last octet counts the padding octets, itself included.
            padding = data[-1]
            if padding == 0:
                raise RemoteProtocolError("RTP padding length is zero")
            end -= padding
            if end < RTP_HEADER_BYTES:
                raise RemoteProtocolError("RTP padding longer than the packet")
        pos = RTP_HEADER_BYTES + 4 * (b0 & 0x0F)
        if pos > end:
            raise RemoteProtocolError("RTP CSRC list truncated")
        csrc = struct.unpack_from(f"!{b0 & 0x0F}I", data, RTP_HEADER_BYTES) if b0 & 0x0F else ()
        profile: int | None = None
        extension = b""
        if b0 & 0x10:
            if pos + 4 > end:
                raise RemoteProtocolError("RTP header extension truncated")
            profile, words = _EXTENSION.unpack_from(data, pos)
            pos += 4
            if pos + 4 * words > end:
                raise RemoteProtocolError("RTP header extension truncated")
            extension = bytes(data[pos : pos + 4 * words])
            pos += 4 * words
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension_profile=profile,
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        """The packet as bytes; raises LocalProtocolError for values that do not fit the header."""
        if not 0 <= self.payload_type <= 0x7F:
            raise LocalProtocolError(f"RTP payload type {self.payload_type} out of range")
        if len(self.csrc) > 15:
            raise LocalProtocolError("RTP CSRC list longer than 15")
        if len(self.extension) % 4 or len(self.extension) > 4 * 0xFFFF:
            raise LocalProtocolError("RTP header extension must be a multiple of 4 octets")
        if not 0 <= self.padding <= 255:
            raise LocalProtocolError(f"RTP padding {self.padding} out of range")
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension_profile is not None:
            b0 |= 0x10
        out = bytearray(
            _HEADER.pack(
                b0,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        )
        for source in self.csrc:
            out += struct.pack("!I", source)
        if self.extension_profile is not None:
            out += _EXTENSION.pack(self.extension_profile, len(self.extension) // 4) + self.extension
        out += self.payload
        if self.padding:
            out += bytes(self.padding - 1) + bytes([self.padding])
        return bytes(out)


def is_rtcp(data: bytes) -> bool:
    """True for an RTCP packet arriving where RTP was expected (RFC 5761 §4: PT 64-95 with marker)."""
    return len(data) >= 2 and 192 <= data[1] <= 223
