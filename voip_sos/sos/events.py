"""Events the SOS listener core hands to its adapter (STYLE.md §3: frozen, past tense)."""

from __future__ import annotations

from dataclasses import dataclass

from voip_sos.directory.records import StbMatch
from voip_sos.sos.wire import Message, MsgType, RejectReason, StatusCode

__all__ = [
    "Addr",
    "Event",
    "ReceiptSent",
    "RejectSent",
    "RequestAuthenticated",
    "RequestParsed",
    "StatusAbandoned",
    "StatusSeen",
    "StatusSent",
]

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RequestParsed:
    """A request passed the cheap checks; the adapter looks up `ip` and calls `lookup_done(ticket, …)`."""

    ticket: int
    """Handle to pass back to the core."""
    ip: str
    """The carried STB address to look up in the directory."""


@dataclass(frozen=True, slots=True)
class RequestAuthenticated:
    """A request verified with its STB's key; the adapter records it and calls `recorded`/`refused`."""

    ticket: int
    """Handle to pass back to the core."""
    message: Message
    """The verified request."""
    match: StbMatch
    """The directory's answer (F3): the subscriber and the STB."""
    operator_key: bool
    """True when it verified with the operator-wide key (the STB has no secret of its own)."""
    source: Addr
    """UDP source the request came from."""
    received_wall: float
    """Wall-clock time (Unix seconds) the datagram arrived."""


@dataclass(frozen=True, slots=True)
class ReceiptSent:
    """A RECEIPT went out (first time, or again for a retransmission or replay)."""

    request_id: bytes
    """The request it answers."""
    incident_id: int
    """Incident the request belongs to (0 for a HEARTBEAT without an open incident)."""
    ip: str
    """The STB."""
    kind: MsgType
    """What was answered (SOS, CANCEL, UPDATE, HEARTBEAT)."""
    again: bool
    """True when the request had been answered before (retransmission or replay: nothing started)."""
    elapsed_s: float = 0.0
    """From the datagram's arrival to this RECEIPT (the listener's own share of the STB's wait)."""


@dataclass(frozen=True, slots=True)
class RejectSent:
    """A REJECT went out to an authenticated sender."""

    request_id: bytes
    """The request it answers."""
    ip: str
    """The STB."""
    reason: RejectReason
    """Why."""


@dataclass(frozen=True, slots=True)
class StatusSent:
    """A STATUS went out for the first time (resends are not reported)."""

    incident_id: int
    """The incident."""
    ip: str
    """The STB told."""
    status: StatusCode
    """What it was told."""
    status_seq: int
    """Number of this STATUS within the incident."""


@dataclass(frozen=True, slots=True)
class StatusSeen:
    """The STB answered SEEN: the TV has shown this STATUS."""

    incident_id: int
    """The incident."""
    ip: str
    """The STB."""
    status: StatusCode
    """What it saw."""
    status_seq: int
    """Number of this STATUS within the incident."""


@dataclass(frozen=True, slots=True)
class StatusAbandoned:
    """A STATUS was resent until the give-up time without a SEEN."""

    incident_id: int
    """The incident."""
    ip: str
    """The STB that never answered."""
    status: StatusCode
    """What it was not told."""
    status_seq: int
    """Number of this STATUS within the incident."""


Event = (
    RequestParsed
    | RequestAuthenticated
    | ReceiptSent
    | RejectSent
    | StatusSent
    | StatusSeen
    | StatusAbandoned
)
