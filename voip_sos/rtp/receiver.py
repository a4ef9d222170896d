"""The incoming RTP stream of one call (sans-IO): statistics and keys, no jitter buffer.

We never play what we receive; we only need the callee's keys and honest statistics. So packets are
handled in arrival order: telephone-events go to the RFC 4733 folder, audio is decoded and fed to the
in-band detector. In-band detection stops once the far end has sent a telephone-event: a gateway that
sends both would otherwise report every key twice (RFC 4733 §2.6 asks senders not to, not all obey).
Loss and jitter follow RFC 3550 appendix A.3 and A.8.
"""

from __future__ import annotations

from dataclasses import dataclass

from voip_sos.errors import RemoteProtocolError
from voip_sos.rtp.dtmf import TelephoneEventReceiver
from voip_sos.rtp.events import DtmfReceived
from voip_sos.rtp.g711 import CLOCK_RATE_HZ, STATIC_PAYLOAD_TYPES, Codec, decode
from voip_sos.rtp.inband import InbandDtmfDetector
from voip_sos.rtp.packet import RtpPacket
from voip_sos.rtp.rtcp import ReportBlock

__all__ = ["ReceiveStats", "RtpReceiver"]

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ReceiveStats:
    """What arrived from the far end."""

    packets: int
    """Valid RTP packets received."""
    octets: int
    """Their payload octets."""
    bytes: int
    """Their datagram bytes (headers included)."""
    invalid: int
    """Datagrams dropped as malformed."""
    source: Addr | None
    """Source address of the last valid packet."""
    ssrc: int | None
    """The far end's SSRC (last seen)."""
    lost: int
    """Expected minus received (RFC 3550 A.3), may be negative with duplicates."""
    jitter_ms: float
    """Interarrival jitter estimate (RFC 3550 A.8)."""
    first_at: float | None
    last_at: float | None


class RtpReceiver:
    """Parses and accounts incoming RTP; `receive()` returns the key presses it completes."""

    def __init__(
        self, *, codec: Codec, payload_type: int, telephone_event_pt: int | None, inband: bool = True
    ):
        self._pt_codec: dict[int, Codec] = {}
        self.telephone_event_pt: int | None = None
        self.set_codec(codec, payload_type, telephone_event_pt)
        self._events = TelephoneEventReceiver()
        self._inband = InbandDtmfDetector() if inband else None
        self.packets = self.octets = self.bytes = self.invalid = 0
        self.source: Addr | None = None
        self.ssrc: int | None = None
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._received_at_base = 0
        self._expected_prior = self._received_prior = 0
        self._transit: int | None = None
        self._jitter = 0.0
        self.last_sr: tuple[int, float] | None = None  # (middle 32 bits of NTP, arrival time)

    def set_codec(self, codec: Codec, payload_type: int, telephone_event_pt: int | None) -> None:
        """Follow the negotiated payload types; the static G.711 types are always understood."""
        self._pt_codec = {pt: c for c, pt in STATIC_PAYLOAD_TYPES.items()}
        self._pt_codec[payload_type] = codec
        self.telephone_event_pt = telephone_event_pt

    def receive(self, data: bytes, addr: Addr, now: float) -> tuple[RtpPacket, list[DtmfReceived]]:
        """Account one datagram; raises RemoteProtocolError (and counts it) when it is malformed."""
        try:
            packet = RtpPacket.parse(data)
            keys = self._route(packet, now)
        except RemoteProtocolError:
            self.invalid += 1
            raise
        self._account(packet, len(data), addr, now)
        return packet, keys

    def _route(self, packet: RtpPacket, now: float) -> list[DtmfReceived]:
        pt = packet.payload_type
        if pt == self.telephone_event_pt and pt is not None:
            self._inband = None
            key = self._events.receive(packet, now)
            return [key] if key is not None else []
        codec = self._pt_codec.get(pt)
        if codec is not None and self._inband is not None:
            return self._inband.feed(decode(codec, packet.payload), now)
        return []

    def _account(self, packet: RtpPacket, size: int, addr: Addr, now: float) -> None:
        seq = packet.sequence_number
        if self.packets == 0 or packet.ssrc != self.ssrc:
            # A new source (or the first): restart the sequence accounting (RFC 3550 A.1 init_seq).
            self._base_seq, self._max_seq, self._cycles = seq, seq, 0
            self._expected_prior = self._received_prior = 0
            self._transit = None
            self._received_at_base = self.packets
            self.ssrc = packet.ssrc
        else:
            delta = (seq - self._max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self._max_seq:
                    self._cycles += 1 << 16
                self._max_seq = seq
        self.packets += 1
        self.octets += len(packet.payload)
        self.bytes += size
        self.source = addr
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        if packet.payload_type != self.telephone_event_pt:
            # A.8: jitter in timestamp units from arrival time vs media timestamp.
            transit = round(now * CLOCK_RATE_HZ) - packet.timestamp
            if self._transit is not None:
                d = abs(((transit - self._transit + (1 << 31)) & 0xFFFFFFFF) - (1 << 31))
                self._jitter += (d - self._jitter) / 16
            self._transit = transit

    @property
    def _extended_max(self) -> int:
        return self._cycles + self._max_seq

    @property
    def lost(self) -> int:
        if not self.packets:
            return 0
        expected = self._extended_max - self._base_seq + 1
        return expected - (self.packets - self._received_at_base)

    def stats(self) -> ReceiveStats:
        """A snapshot of the counters."""
        return ReceiveStats(
            packets=self.packets,
            octets=self.octets,
            bytes=self.bytes,
            invalid=self.invalid,
            source=self.source,
            ssrc=self.ssrc,
            lost=self.lost,
            jitter_ms=self._jitter / CLOCK_RATE_HZ * 1000,
            first_at=self.first_at,
            last_at=self.last_at,
        )

    def report_block(self, now: float) -> ReportBlock | None:
        """The block for our next SR (RFC 3550 A.3 fraction lost since the last one), None before any RTP."""
        if not self.packets or self.ssrc is None:
            return None
        expected = self._extended_max - self._base_seq + 1
        received = self.packets - self._received_at_base
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (received - self._received_prior)
        self._expected_prior, self._received_prior = expected, received
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        lsr, dlsr = 0, 0
        if self.last_sr is not None:
            lsr = self.last_sr[0]
            dlsr = round((now - self.last_sr[1]) * 65536) & 0xFFFFFFFF
        lost = max(-(1 << 23), min(expected - received, (1 << 23) - 1))
        return ReportBlock(
            self.ssrc,
            min(fraction, 255),
            lost,
            self._extended_max & 0xFFFFFFFF,
            round(self._jitter),
            lsr,
            dlsr,
        )
