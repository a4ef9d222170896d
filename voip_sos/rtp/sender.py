"""The outgoing RTP stream of one call (sans-IO): prompt loop, silence, DTMF, sequence and timing.

One stream per call (RFC 3550 §5.1, §8): one random SSRC, sequence number and timestamp starting at
random values and wrapping at 16 and 32 bits, the marker on the first packet. Slot n of the stream is
due at `start + n * 20 ms` (an absolute schedule: lateness of one wakeup never accumulates) and
carries timestamp `ts0 + 160 n`. Every slot carries a packet: prompt audio, silence in loop gaps and
after a prompt ends, or a telephone-event while a key is being sent. A PBX jitter buffer expects that.

If the caller falls far behind (a stalled event loop), at most MAX_BURST_FRAMES late packets are sent
at once; older slots are skipped (their timestamps pass, sequence numbers do not, the next packet
carries the marker so the far end resynchronises) and the prompt resumes where it was, so no word is
lost. RFC 3550 §5.1 allows exactly that kind of timestamp jump.
"""

from __future__ import annotations

import math
import random
import struct
from collections import deque
from dataclasses import dataclass

from voip_sos.errors import LocalProtocolError
from voip_sos.rtp.dtmf import digit_to_event, event_payload
from voip_sos.rtp.events import PromptPlayed
from voip_sos.rtp.g711 import SILENCE_BYTE, Codec
from voip_sos.rtp.prompt import SAMPLES_PER_FRAME, Prompt

__all__ = [
    "FRAME_SECONDS",
    "MAX_BURST_FRAMES",
    "PTIME_MS",
    "RtpSender",
]

PTIME_MS = 20
FRAME_SECONDS = PTIME_MS / 1000
MAX_BURST_FRAMES = 5
DTMF_DURATION_MS = 100
DTMF_GAP_FRAMES = 3  # audio between two keys sent in a row (RFC 4733 §2.5.1.2 needs some)
DTMF_END_REPEATS = 3  # RFC 4733 §2.5.1.4
_HEADER = struct.Struct("!BBHII")


@dataclass(slots=True)
class _Dtmf:
    code: int
    frames: int  # slots the tone lasts
    slot0: int = -1  # slot of its first packet: its timestamp
    sent: int = 0  # packets sent so far (tone packets, then end repeats)


class RtpSender:
    """Builds the packets of one stream; the adapter asks what is due and sends it."""

    def __init__(
        self,
        *,
        codec: Codec,
        payload_type: int,
        telephone_event_pt: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.SystemRandom()
        self.ssrc = rng.getrandbits(32)
        self._seq = rng.getrandbits(16)
        self._ts0 = rng.getrandbits(32)
        self.codec = codec
        self.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        self._silence = bytes([SILENCE_BYTE[codec]]) * SAMPLES_PER_FRAME
        self._start_at: float | None = None
        self._slot = 0  # next slot to fill
        self._marker = True
        self._prompt: Prompt | None = None
        self._frames: tuple[bytes, ...] = ()
        self._pos = 0  # next frame of the prompt
        self._loop = False
        self._gap_frames = 0
        self._gap_left = 0  # silence frames still to send before the prompt starts again
        self._finished = False  # a non-looping prompt has played
        self.repetitions = 0
        self._dtmf: deque[_Dtmf] = deque()
        self._dtmf_gap = 0
        self._events: deque[PromptPlayed] = deque()
        self.packets_sent = 0
        self.octets_sent = 0  # payload octets (RFC 3550 §6.4.1 sender's octet count)
        self.slots_skipped = 0
        self.paused = False

    # --- control -------------------------------------------------------------------------------

    def start(
        self, now: float, prompt: Prompt | None = None, *, loop: bool = True, gap_s: float = 0.0
    ) -> None:
        """Begin the stream at `now` (slot 0 is due then) with `prompt`, or silence if None."""
        if self._start_at is not None:
            raise LocalProtocolError("RTP stream already started")
        self._start_at = now
        if prompt is not None:
            self.play(prompt, loop=loop, gap_s=gap_s)

    def play(self, prompt: Prompt, *, loop: bool = True, gap_s: float = 0.0) -> None:
        """From the next slot on, play `prompt` from its top (the stream itself goes on)."""
        if gap_s < 0:
            raise LocalProtocolError("gap must not be negative")
        self._prompt = prompt
        self._frames = prompt.frames(self.codec)
        self._pos = 0
        self._loop = loop
        self._gap_frames = round(gap_s / FRAME_SECONDS)
        self._gap_left = 0
        self._finished = False
        self.repetitions = 0

    def restart(self) -> None:
        """Play the current prompt again from its top at the next slot."""
        if self._prompt is not None:
            self.play(self._prompt, loop=self._loop, gap_s=self._gap_frames * FRAME_SECONDS)

    def silence(self) -> None:
        """Stop the prompt; silence packets go on."""
        self._prompt, self._frames, self._finished = None, (), False

    def set_codec(self, codec: Codec, payload_type: int, telephone_event_pt: int | None) -> None:
        """Follow a re-negotiation (re-INVITE): same stream, new payload type, same prompt position."""
        self.codec, self.payload_type, self.telephone_event_pt = codec, payload_type, telephone_event_pt
        self._silence = bytes([SILENCE_BYTE[codec]]) * SAMPLES_PER_FRAME
        if self._prompt is not None:
            self._frames = self._prompt.frames(codec)
        if telephone_event_pt is None:
            self._dtmf.clear()

    def send_dtmf(self, digit: str, duration_ms: int = DTMF_DURATION_MS) -> None:
        """Queue one key as RFC 4733 events; they replace audio for their duration."""
        if self.telephone_event_pt is None:
            raise LocalProtocolError("telephone-event was not negotiated")
        self._dtmf.append(_Dtmf(digit_to_event(digit), max(1, duration_ms // PTIME_MS)))

    def pause(self, paused: bool) -> None:
        """Stop or resume sending (RFC 3264 §8.4 hold: the far end answered recvonly/inactive).

        While paused the schedule runs on (timestamps keep their meaning), no packet is built and
        sequence numbers do not advance; the first packet after a pause carries the marker."""
        if paused and not self.paused:
            self._marker = True
        self.paused = paused

    @property
    def started(self) -> bool:
        return self._start_at is not None

    @property
    def finished(self) -> bool:
        """True once a non-looping prompt has played to its end."""
        return self._finished

    # --- timing --------------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """When the next packet is due (absolute, monotonic), None before start()."""
        if self._start_at is None:
            return None
        return self._start_at + self._slot * FRAME_SECONDS

    def timestamp_at(self, now: float) -> int:
        """The RTP timestamp that corresponds to `now` (RFC 3550 §6.4.1, for sender reports)."""
        start = self._start_at if self._start_at is not None else now
        return (self._ts0 + round((now - start) * 8000)) & 0xFFFFFFFF

    def packets_due(self, now: float) -> list[bytes]:
        """The packets whose slot has come by `now`, in order (usually one)."""
        if self._start_at is None:
            return []
        due = self._due_slots(now)
        late = due - self._slot
        if late <= 0:
            return []
        if self.paused:
            self._slot = due
            return []
        if late > MAX_BURST_FRAMES:
            skip = late - MAX_BURST_FRAMES
            self._slot += skip
            self.slots_skipped += skip
            self._marker = True
        out = []
        while self._slot < due:
            out.append(self._packet())
            self._slot += 1
        return out

    def skip_due(self, now: float) -> None:
        """Let the slots due by `now` pass unsent (no destination yet): no packet, no sequence number."""
        if self._start_at is not None:
            self._slot = max(self._slot, self._due_slots(now))

    def _due_slots(self, now: float) -> int:
        # Slots due by now; the tiny epsilon absorbs float error of start + n * 0.02.
        assert self._start_at is not None
        return math.floor((now - self._start_at) / FRAME_SECONDS + 1e-6) + 1

    def next_event(self) -> PromptPlayed | None:
        """The next PromptPlayed event, if any."""
        return self._events.popleft() if self._events else None

    # --- packet building -----------------------------------------------------------------------

    def _packet(self) -> bytes:
        if self._dtmf and self._dtmf_gap == 0:
            return self._dtmf_packet()
        if self._dtmf_gap:
            self._dtmf_gap -= 1
        payload = self._audio_frame()
        return self._emit(self.payload_type, self._slot, payload)

    def _emit(self, pt: int, slot: int, payload: bytes, marker: bool = False) -> bytes:
        b1 = pt | (0x80 if (marker or self._marker) else 0)
        self._marker = False
        header = _HEADER.pack(
            0x80, b1, self._seq, (self._ts0 + slot * SAMPLES_PER_FRAME) & 0xFFFFFFFF, self.ssrc
        )
        self._seq = (self._seq + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return header + payload

    def _audio_frame(self) -> bytes:
        if not self._frames or self._finished:
            return self._silence
        if self._gap_left:
            self._gap_left -= 1
            return self._silence
        frame = self._frames[self._pos]
        self._pos += 1
        if self._pos == len(self._frames):
            self._pos = 0
            self.repetitions += 1
            assert self._start_at is not None
            self._events.append(PromptPlayed(self.repetitions, self._start_at + self._slot * FRAME_SECONDS))
            if self._loop:
                self._gap_left = self._gap_frames
            else:
                self._finished = True
        return frame

    def _dtmf_packet(self) -> bytes:
        ev = self._dtmf[0]
        if ev.slot0 < 0:
            ev.slot0 = self._slot
        ev.sent += 1
        end = ev.sent >= ev.frames
        duration = min(ev.sent, ev.frames) * SAMPLES_PER_FRAME
        if ev.sent >= ev.frames + DTMF_END_REPEATS - 1:
            self._dtmf.popleft()
            self._dtmf_gap = DTMF_GAP_FRAMES
        assert self.telephone_event_pt is not None
        payload = event_payload(ev.code, duration, end=end)
        # §2.5.1.1: every packet of the event carries the timestamp of its start; marker on the first.
        return self._emit(self.telephone_event_pt, ev.slot0, payload, marker=ev.sent == 1)
