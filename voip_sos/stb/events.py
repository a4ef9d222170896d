"""Events the STB agent core reports (STYLE.md §3: frozen, past tense)."""

from __future__ import annotations

from dataclasses import dataclass

from voip_sos.sos.events import Addr
from voip_sos.sos.wire import MsgType, RejectReason, StatusCode

__all__ = [
    "AgentEvent",
    "ClockCorrected",
    "ReceiptReceived",
    "RejectReceived",
    "RequestTimedOut",
    "StatusReceived",
]


@dataclass(frozen=True, slots=True)
class ReceiptReceived:
    """The backend has recorded the request."""

    request_id: bytes
    """Our request."""
    kind: MsgType
    """SOS, CANCEL, UPDATE or HEARTBEAT."""
    incident_id: int
    """The incident (0: a HEARTBEAT while no incident is open)."""
    tries: int
    """Datagrams sent for this request, the answered one included."""
    elapsed_s: float
    """From the first try to the RECEIPT."""
    backend: Addr
    """Who answered."""


@dataclass(frozen=True, slots=True)
class RejectReceived:
    """The backend authenticated the request and refused it."""

    request_id: bytes
    """Our request."""
    kind: MsgType
    """SOS, CANCEL, UPDATE or HEARTBEAT."""
    reason: RejectReason
    """Why."""
    backend_time_ms: int
    """The backend's clock (Unix milliseconds) when it refused."""
    tries: int
    """Datagrams sent for this request."""
    elapsed_s: float
    """From the first try to the REJECT."""
    backend: Addr
    """Who answered."""


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    """No backend answered within the give-up time."""

    request_id: bytes
    """Our request."""
    kind: MsgType
    """SOS, CANCEL, UPDATE or HEARTBEAT."""
    tries: int
    """Datagrams sent."""
    elapsed_s: float
    """From the first try to giving up."""


@dataclass(frozen=True, slots=True)
class ClockCorrected:
    """A REJECT `clock` told us the backend's time; later timestamps carry this offset."""

    offset_s: float
    """Backend clock minus ours."""


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """The backend told us how the incident is going (reported once per STATUS; SEEN sent each time)."""

    incident_id: int
    """The incident."""
    status: StatusCode
    """Its progress."""
    status_seq: int
    """Number of this STATUS within the incident."""
    detail: str | None
    """Text for the TV, if any."""


AgentEvent = ReceiptReceived | RejectReceived | RequestTimedOut | ClockCorrected | StatusReceived
