"""Minimal RTCP (RFC 3550 §6): build our sender report + SDES CNAME (+ BYE), parse what the far end sends.

Every compound packet we send starts with an SR and carries an SDES CNAME (§6.1). Our SR carries
one report block about the far end's stream once we have received any of it (§6.4.1), so the PBX
sees loss and jitter in both directions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from voip_sos.errors import RemoteProtocolError

__all__ = [
    "NTP_EPOCH_OFFSET_S",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "SenderReport",
    "build_bye",
    "build_sdes",
    "build_sr",
    "ntp_from_unix",
    "parse_rtcp",
]

RTCP_SR, RTCP_RR, RTCP_SDES, RTCP_BYE = 200, 201, 202, 203
NTP_EPOCH_OFFSET_S = 2_208_988_800  # 1900-01-01 to 1970-01-01
_SDES_CNAME = 1
_SR_BODY = struct.Struct("!IIIIII")  # ssrc, ntp msw, ntp lsw, rtp ts, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # ssrc, fraction|lost, ext seq, jitter, lsr, dlsr


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception statistics about one source (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int
    """Lost since the last report, out of 256."""
    cumulative_lost: int
    """Lost since the start (signed 24 bits)."""
    highest_seq: int
    """Extended highest sequence number received."""
    jitter: int
    """Interarrival jitter, timestamp units."""
    lsr: int = 0
    """Middle 32 bits of the last SR's NTP time from that source."""
    dlsr: int = 0
    """Delay since that SR, 1/65536 s."""


@dataclass(frozen=True, slots=True)
class SenderReport:
    """An SR received."""

    ssrc: int
    ntp: int
    """64-bit NTP timestamp."""
    rtp_timestamp: int
    packets: int
    octets: int
    blocks: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """An RR received."""

    ssrc: int
    blocks: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """Any other RTCP packet (SDES, BYE, APP, feedback), kept whole."""

    packet_type: int
    data: bytes


def ntp_from_unix(unix_s: float) -> int:
    """64-bit NTP timestamp of a Unix time."""
    return round((unix_s + NTP_EPOCH_OFFSET_S) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    # Length is in 32-bit words minus one, header included (§6.4.1).
    return struct.pack("!BBH", 0x80 | count, packet_type, (body_len + 4) // 4 - 1)


def _pack_block(b: ReportBlock) -> bytes:
    lost = b.cumulative_lost & 0xFFFFFF  # two's complement in 24 bits
    return _BLOCK.pack(b.ssrc, (b.fraction_lost & 0xFF) << 24 | lost, b.highest_seq, b.jitter, b.lsr, b.dlsr)


def build_sr(
    ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int, block: ReportBlock | None = None
) -> bytes:
    """One SR with zero or one report block."""
    body = _SR_BODY.pack(
        ssrc, ntp >> 32, ntp & 0xFFFFFFFF, rtp_timestamp, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF
    )
    if block is not None:
        body += _pack_block(block)
    return _header(1 if block else 0, RTCP_SR, len(body)) + body


def build_sdes(ssrc: int, cname: str) -> bytes:
    """SDES with one chunk holding the CNAME (§6.5.1), padded to a word."""
    text = cname.encode("utf-8")[:255]
    chunk = struct.pack("!IBB", ssrc, _SDES_CNAME, len(text)) + text + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    return _header(1, RTCP_SDES, len(chunk)) + chunk


def build_bye(ssrc: int) -> bytes:
    """BYE for our source (§6.6)."""
    return _header(1, RTCP_BYE, 4) + struct.pack("!I", ssrc)


def _parse_blocks(data: bytes, pos: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for i in range(count):
        ssrc, lost, ext, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos + 24 * i)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, ext, jitter, lsr, dlsr))
    return tuple(blocks)


def parse_rtcp(data: bytes) -> list[SenderReport | ReceiverReport | RtcpPacket]:
    """Every packet of a compound RTCP datagram; raises RemoteProtocolError with an exact message."""
    out: list[SenderReport | ReceiverReport | RtcpPacket] = []
    pos = 0
    if len(data) < 4:
        raise RemoteProtocolError("RTCP packet too short")
    while pos < len(data):
        if len(data) - pos < 4:
            raise RemoteProtocolError("RTCP packet too short")
        b0, pt, words = struct.unpack_from("!BBH", data, pos)
        if b0 >> 6 != 2:
            raise RemoteProtocolError("RTCP version is not 2")
        end = pos + 4 * (words + 1)
        if end > len(data):
            raise RemoteProtocolError("RTCP length exceeds datagram")
        count = b0 & 0x1F
        if pt == RTCP_SR:
            if end - pos < 28 + 24 * count:
                raise RemoteProtocolError("RTCP sender report too short")
            ssrc, msw, lsw, ts, packets, octets = _SR_BODY.unpack_from(data, pos + 4)
            out.append(
                SenderReport(ssrc, msw << 32 | lsw, ts, packets, octets, _parse_blocks(data, pos + 28, count))
            )
        elif pt == RTCP_RR:
            if end - pos < 8 + 24 * count:
                raise RemoteProtocolError("RTCP receiver report too short")
            (ssrc,) = struct.unpack_from("!I", data, pos + 4)
            out.append(ReceiverReport(ssrc, _parse_blocks(data, pos + 8, count)))
        else:
            out.append(RtcpPacket(pt, bytes(data[pos:end])))
        pos = end
    return out
