"""RFC 4733 telephone-events: keys received (one event per press) and the payloads to send one.

A press is one event, and every packet of one event carries the same RTP timestamp (RFC 4733
§2.5.1.1): the first packet has the marker bit, updates grow `duration`, the end packet is sent three
times (§2.5.1.4). So a press is recognised by a timestamp not seen before and reported on its first
packet (a lost end packet must not lose the key); everything else with that timestamp is folded.
Events longer than the 16-bit duration field are cut into segments with new timestamps and no marker
(§2.5.1.3); those are folded into the press they continue.
"""

from __future__ import annotations

import struct
from collections import deque

from voip_sos.errors import LocalProtocolError, RemoteProtocolError
from voip_sos.rtp.events import DtmfReceived
from voip_sos.rtp.packet import RtpPacket

__all__ = [
    "DIGITS",
    "TelephoneEventReceiver",
    "digit_to_event",
    "event_payload",
    "event_to_digit",
]

# RFC 4733 §3.2, table 7: event codes 0-15 are the DTMF keys.
DIGITS = "0123456789*#ABCD"
_PAYLOAD = struct.Struct("!BBH")
_SEEN_EVENTS = 32  # timestamps remembered to fold late retransmissions
_MAX_DURATION = 0xFFFF
# Lost updates at the end of a long segment: how far below the maximum its last duration may be.
_SEGMENT_SLACK = 1600  # samples (200 ms)


def digit_to_event(digit: str) -> int:
    """The event code of a key; raises LocalProtocolError for anything else."""
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise LocalProtocolError(f"not a DTMF key: {digit!r}")
    return code


def event_to_digit(code: int) -> str | None:
    """The key of an event code, None for non-DTMF events (flash, tones)."""
    return DIGITS[code] if 0 <= code < len(DIGITS) else None


def event_payload(code: int, duration: int, *, end: bool, volume: int = 10) -> bytes:
    """One telephone-event payload (RFC 4733 §2.3); volume in -dBm0 (0-63), duration in samples."""
    if not 0 <= code <= 255 or not 0 <= volume <= 63 or not 0 <= duration <= _MAX_DURATION:
        raise LocalProtocolError("telephone-event field out of range")
    return _PAYLOAD.pack(code, (0x80 if end else 0) | volume, duration)


class TelephoneEventReceiver:
    """Folds telephone-event packets of one call into one DtmfReceived per press."""

    __slots__ = ("_current", "_seen")

    def __init__(self) -> None:
        self._seen: deque[tuple[int, int]] = deque(maxlen=_SEEN_EVENTS)
        # The press in progress: (ssrc, timestamp, code, duration, ended).
        self._current: tuple[int, int, int, int, bool] | None = None

    def receive(self, packet: RtpPacket, now: float) -> DtmfReceived | None:
        """Feed one telephone-event packet; returns the press it starts, if it starts one."""
        if len(packet.payload) < 4:
            raise RemoteProtocolError("telephone-event payload shorter than 4 octets")
        code, flags, duration = _PAYLOAD.unpack_from(packet.payload)
        ended = bool(flags & 0x80)
        key = (packet.ssrc, packet.timestamp)
        if key in self._seen:
            if self._current is not None and self._current[:2] == key:
                self._current = (*key, code, max(duration, self._current[3]), ended or self._current[4])
            return None
        continued = self._continues(packet, code)
        self._seen.append(key)
        self._current = (*key, code, duration, ended)
        digit = event_to_digit(code)
        if continued or digit is None:
            return None
        return DtmfReceived(digit=digit, source="rfc4733", at=now)

    def _continues(self, packet: RtpPacket, code: int) -> bool:
        # §2.5.1.3: a long event goes on in a new segment that starts where the last one ended.
        cur = self._current
        if packet.marker or cur is None or cur[4]:
            return False
        ssrc, ts, cur_code, cur_duration, _ = cur
        step = (packet.timestamp - ts) & 0xFFFFFFFF
        return (
            ssrc == packet.ssrc
            and cur_code == code
            and cur_duration >= _MAX_DURATION - _SEGMENT_SLACK
            and cur_duration <= step <= _MAX_DURATION + _SEGMENT_SLACK
        )
