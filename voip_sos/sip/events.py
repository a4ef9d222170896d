"""Events the SIP user-agent core hands to its adapter (`SipAgent.next_event()`)."""

from __future__ import annotations

from dataclasses import dataclass

from voip_sos.sip.sdp import MediaParams

__all__ = [
    "CallAnswered",
    "CallEnded",
    "CallProgressed",
    "DtmfReceived",
    "Event",
    "IncomingCall",
    "MediaUpdated",
    "MessageReceived",
    "MessageResult",
    "RegistrationChanged",
]


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    """The registration moved to a new state."""

    state: str
    """unregistered, registering, registered or failed"""
    status: int | None
    """the final SIP status that caused it (None for a timeout or a local change)"""
    reason: str
    """the reason phrase, or why we gave up"""
    expires_s: int | None = None
    """lifetime granted by the registrar, when registered"""
    retry_at: float | None = None
    """when the next attempt is due, when failed"""


@dataclass(frozen=True, slots=True)
class CallProgressed:
    """A provisional response arrived for our INVITE: 180 ringing or 183 session progress."""

    call_id: str
    """the call's SIP Call-ID"""
    status: int
    """100, 180 or 183"""
    reason: str
    """the reason phrase"""
    early_media: MediaParams | None
    """where to send/receive early media when the response carried SDP (RFC 3261 §13.2.1)"""


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A 2xx confirmed the call (our INVITE answered, or our answer ACKed for incoming calls)."""

    call_id: str
    """the call's SIP Call-ID"""
    media: MediaParams
    """the negotiated stream"""


@dataclass(frozen=True, slots=True)
class MediaUpdated:
    """A re-INVITE or UPDATE changed the stream (hold, resume, new address or codec)."""

    call_id: str
    """the call's SIP Call-ID"""
    media: MediaParams
    """the stream as it now is"""


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The far end pressed a key, signalled by SIP INFO (RFC 4733 and in-band are the RTP side's)."""

    call_id: str
    """the call's SIP Call-ID"""
    key: str
    """0-9, *, #, A-D"""
    duration_ms: int | None
    """the signalled duration, when given"""


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over, for whatever reason."""

    call_id: str
    """the call's SIP Call-ID"""
    by: str
    """remote (the far end hung up or refused), local (we did), or timeout / error"""
    status: int | None
    """the final SIP status of the INVITE or BYE that ended it (None when no response came)"""
    reason: str
    """the reason phrase or a description"""
    answered: bool
    """whether the call had been answered"""


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A new INVITE arrived; answer it with `answer()` or refuse it with `reject()`."""

    call_id: str
    """the call's SIP Call-ID"""
    caller: str
    """the From URI"""
    display_name: str | None
    """the From display name"""
    callee: str
    """the Request-URI"""
    offer: MediaParams | None
    """the caller's offer as we would use it (None for an offer-less INVITE)"""


@dataclass(frozen=True, slots=True)
class MessageResult:
    """Our MESSAGE (RFC 3428) got its final status."""

    handle: str
    """the Call-ID returned by `message()`"""
    status: int | None
    """final SIP status; None when no response came"""
    reason: str
    """the reason phrase or a description"""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A MESSAGE arrived for us."""

    sender: str
    """the From URI"""
    content_type: str
    """its Content-Type"""
    body: bytes
    """its body"""


Event = (
    RegistrationChanged
    | CallProgressed
    | CallAnswered
    | MediaUpdated
    | DtmfReceived
    | CallEnded
    | IncomingCall
    | MessageResult
    | MessageReceived
)
