"""Events the media path reports to the call: keys heard, prompt progress, where media comes from."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DtmfReceived",
    "FirstPacketReceived",
    "MediaTimedOut",
    "PromptPlayed",
    "RemoteAddressLatched",
    "RtpEvent",
]

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The callee pressed a key (reported once per press)."""

    digit: str
    """One of 0-9 * # A-D."""
    source: str
    """How it arrived: "rfc4733" (telephone-event), "inband" (tones in the audio) or "info" (SIP INFO)."""
    at: float
    """Monotonic time the press was recognised."""


@dataclass(frozen=True, slots=True)
class PromptPlayed:
    """The current prompt has played to its end once more."""

    repetitions: int
    """Complete plays of this prompt so far (1 after the first)."""
    at: float
    """Monotonic (schedule) time of the last frame of the play."""


@dataclass(frozen=True, slots=True)
class RemoteAddressLatched:
    """Symmetric RTP: we now send to where the far end's RTP really comes from."""

    addr: Addr
    """The new destination."""
    previous: Addr | None
    """The destination before (from SDP), if any."""
    at: float
    """Monotonic time of the switch."""


@dataclass(frozen=True, slots=True)
class FirstPacketReceived:
    """The first valid RTP packet from the far end arrived."""

    addr: Addr
    """Its source address."""
    at: float
    """Monotonic time of arrival."""


@dataclass(frozen=True, slots=True)
class MediaTimedOut:
    """No RTP from the far end for the configured time while our stream runs (a dead call?)."""

    silent_s: float
    """Seconds since the last packet (or since our stream started, if none came)."""
    at: float
    """Monotonic time of the finding."""


RtpEvent = DtmfReceived | PromptPlayed | RemoteAddressLatched | FirstPacketReceived | MediaTimedOut
