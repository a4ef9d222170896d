"""The media of one call (sans-IO): our stream, theirs, where to send, and when RTCP is due.

Where to send: the SDP answer's address, unless symmetric RTP (comedia, RFC 4961) is on, i.e. we have
no public address of our own and the far end may sit behind NAT. Then we send to where its RTP
really comes from: the first valid packet decides at once (the prompt must reach the call taker now),
a later move needs LATCH_PROBATION_PACKETS packets in a row from the new source, so one stray or
spoofed datagram cannot steer the stream away.

Inactivity: with `inactivity_s` set, MediaTimedOut is reported once when nothing has arrived for that
long while our stream runs (not while we are on hold), and again after packets came back and stopped.

RTCP: an SR (with CNAME) every RTCP_INTERVAL_S on average, the interval randomised by 0.5-1.5
(RFC 3550 §6.3.5) so 500 calls started together do not report together; a BYE at the end (§6.6).
"""

from __future__ import annotations

import random
from collections import deque

from voip_sos.errors import RemoteProtocolError
from voip_sos.rtp.events import FirstPacketReceived, MediaTimedOut, RemoteAddressLatched, RtpEvent
from voip_sos.rtp.g711 import Codec
from voip_sos.rtp.packet import is_rtcp
from voip_sos.rtp.prompt import Prompt
from voip_sos.rtp.receiver import RtpReceiver
from voip_sos.rtp.rtcp import SenderReport, build_bye, build_sdes, build_sr, ntp_from_unix, parse_rtcp
from voip_sos.rtp.sender import RtpSender

__all__ = ["LATCH_PROBATION_PACKETS", "RTCP_INTERVAL_S", "MediaSession"]

Addr = tuple[str, int]
RTCP_INTERVAL_S = 5.0
LATCH_PROBATION_PACKETS = 4


class MediaSession:
    """One call's media core; the adapter moves datagrams and reads the clock."""

    def __init__(
        self,
        *,
        symmetric: bool,
        cname: str,
        wall_offset_s: float = 0.0,
        inband_dtmf: bool = True,
        rtcp_interval_s: float = RTCP_INTERVAL_S,
        inactivity_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._rng = rng or random.SystemRandom()
        self.rtcp_interval_s = rtcp_interval_s
        self.inactivity_s = inactivity_s
        self._quiet_since: float | None = None  # start of the current silence from the far end
        self._timed_out = False
        self.symmetric = symmetric
        self.cname = cname
        self.wall_offset_s = wall_offset_s  # Unix time minus monotonic time, for SR NTP stamps
        self.sender = RtpSender(codec="PCMA", payload_type=8, rng=self._rng)
        self.receiver = RtpReceiver(codec="PCMA", payload_type=8, telephone_event_pt=None, inband=inband_dtmf)
        self.remote: Addr | None = None
        self.rtcp_remote: Addr | None = None
        self._rtcp_from_sdp = True
        self._latched = False
        self._candidate: Addr | None = None
        self._candidate_count = 0
        self.rtcp_due_at: float | None = None
        self._events: deque[RtpEvent] = deque()

    # --- control -------------------------------------------------------------------------------

    def set_remote(
        self,
        addr: Addr,
        *,
        codec: Codec,
        payload_type: int,
        telephone_event_pt: int | None = None,
        rtcp_addr: Addr | None = None,
    ) -> None:
        """Apply an SDP answer (or a later re-negotiation): destination and payload types."""
        if not self._latched or not self.symmetric:
            self.remote = addr
        if self._rtcp_from_sdp:
            self.rtcp_remote = rtcp_addr or (addr[0], addr[1] + 1)
        self.sender.set_codec(codec, payload_type, telephone_event_pt)
        self.receiver.set_codec(codec, payload_type, telephone_event_pt)

    def start(self, now: float, prompt: Prompt | None, *, loop: bool = True, gap_s: float = 0.0) -> None:
        """Start our stream at `now`; the first SR follows after one RTCP interval."""
        self.sender.start(now, prompt, loop=loop, gap_s=gap_s)
        self.rtcp_due_at = now + self._rtcp_interval()
        self._quiet_since = now

    # --- incoming ------------------------------------------------------------------------------

    def receive_rtp(self, data: bytes, addr: Addr, now: float) -> None:
        """A datagram on the RTP port; raises RemoteProtocolError when it is malformed."""
        if is_rtcp(data):  # RFC 5761 multiplexing: some peers send RTCP to the RTP port
            self.receive_rtcp(data, addr, now)
            return
        first = self.receiver.packets == 0
        packet, keys = self.receiver.receive(data, addr, now)
        if first:
            self._events.append(FirstPacketReceived(addr, now))
        self._quiet_since, self._timed_out = now, False
        self._events.extend(keys)
        if self.symmetric and addr != self.remote:
            self._consider_latch(addr, packet.payload_type, now)
        elif addr == self.remote:
            self._latched = True
            self._candidate, self._candidate_count = None, 0

    def receive_rtcp(self, data: bytes, addr: Addr, now: float) -> None:
        """A datagram on the RTCP port; raises RemoteProtocolError when it is malformed."""
        try:
            packets = parse_rtcp(data)
        except RemoteProtocolError:
            self.receiver.invalid += 1
            raise
        for packet in packets:
            if isinstance(packet, SenderReport):
                self.receiver.last_sr = ((packet.ntp >> 16) & 0xFFFFFFFF, now)
        if self.symmetric and addr != self.rtcp_remote:
            self.rtcp_remote = addr
            self._rtcp_from_sdp = False

    def _consider_latch(self, addr: Addr, payload_type: int, now: float) -> None:
        known = {self.sender.payload_type, self.receiver.telephone_event_pt, 0, 8}
        if payload_type not in known:
            return
        if self._latched:
            if addr != self._candidate:
                self._candidate, self._candidate_count = addr, 0
            self._candidate_count += 1
            if self._candidate_count < LATCH_PROBATION_PACKETS:
                return
        previous = self.remote
        self.remote = addr
        self._latched = True
        self._candidate, self._candidate_count = None, 0
        if self._rtcp_from_sdp:
            self.rtcp_remote = (addr[0], addr[1] + 1)
        self._events.append(RemoteAddressLatched(addr, previous, now))

    # --- outgoing ------------------------------------------------------------------------------

    def rtp_due(self, now: float) -> list[bytes]:
        """RTP packets due by `now`, to be sent to `remote` (nothing while it is unknown)."""
        if self.remote is None:
            self.sender.skip_due(now)
            packets: list[bytes] = []
        else:
            packets = self.sender.packets_due(now)
        if self.inactivity_s is not None and self._quiet_since is not None and not self._timed_out:
            if self.sender.paused:
                self._quiet_since = now
            elif now - self._quiet_since >= self.inactivity_s:
                self._timed_out = True
                self._events.append(MediaTimedOut(now - self._quiet_since, now))
        event = self.sender.next_event()
        while event is not None:
            self._events.append(event)
            event = self.sender.next_event()
        return packets

    def rtcp_due(self, now: float) -> bytes | None:
        """The compound SR + SDES if one is due by `now`, to be sent to `rtcp_remote`."""
        if self.rtcp_due_at is None or now < self.rtcp_due_at:
            return None
        self.rtcp_due_at = now + self._rtcp_interval()
        return self._report(now)

    def bye(self, now: float) -> bytes | None:
        """The final SR + SDES + BYE; None if our stream never started."""
        if not self.sender.started:
            return None
        self.rtcp_due_at = None
        return self._report(now) + build_bye(self.sender.ssrc)

    def _report(self, now: float) -> bytes:
        s = self.sender
        sr = build_sr(
            s.ssrc,
            ntp_from_unix(now + self.wall_offset_s),
            s.timestamp_at(now),
            s.packets_sent,
            s.octets_sent,
            self.receiver.report_block(now),
        )
        return sr + build_sdes(s.ssrc, self.cname)

    def _rtcp_interval(self) -> float:
        return self.rtcp_interval_s * self._rng.uniform(0.5, 1.5)

    def next_event(self) -> RtpEvent | None:
        """The next event for the call, if any."""
        return self._events.popleft() if self._events else None
