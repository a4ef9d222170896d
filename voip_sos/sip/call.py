"""Per-call state of the user agent: the INVITE session's state machine and what it remembers.

The agent (agent.py) drives these; this module holds the state table, the session-timer arithmetic
(RFC 4028) and the parsing of DTMF carried in SIP INFO (`application/dtmf-relay`, `application/dtmf`).
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field

from voip_sos.errors import LocalProtocolError, RemoteProtocolError
from voip_sos.logs import bind
from voip_sos.sip import timer_version
from voip_sos.sip.dialog import Dialog
from voip_sos.sip.message import Request
from voip_sos.sip.sdp import MediaParams
from voip_sos.sip.transaction import ServerTransaction

__all__ = ["Call", "CallState", "parse_dtmf_info", "parse_session_expires"]

log = logging.getLogger(__name__)

Addr = tuple[str, int]


class CallState(enum.Enum):
    CALLING = "calling"
    """our INVITE is out, nothing but 100 back yet"""
    EARLY = "early"
    """a 18x came back (ringing, maybe early media)"""
    CANCELLING = "cancelling"
    INCOMING = "incoming"
    """a received INVITE waits for the application"""
    ANSWERING = "answering"
    """we sent 200 to a received INVITE and wait for the ACK"""
    CONFIRMED = "confirmed"
    ENDING = "ending"
    """our BYE is out"""
    ENDED = "ended"


C = CallState
_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    C.CALLING: frozenset({C.EARLY, C.CANCELLING, C.CONFIRMED, C.ENDED}),
    C.EARLY: frozenset({C.CANCELLING, C.CONFIRMED, C.ENDED}),
    C.CANCELLING: frozenset({C.ENDING, C.ENDED}),
    C.INCOMING: frozenset({C.ANSWERING, C.ENDED}),
    C.ANSWERING: frozenset({C.CONFIRMED, C.ENDING, C.ENDED}),
    C.CONFIRMED: frozenset({C.ENDING, C.ENDED}),
    C.ENDING: frozenset({C.ENDED}),
    C.ENDED: frozenset(),
}


_DEADLINES = frozenset({"refresh_at", "expire_at", "give_up_at", "forget_at"})


@dataclass(slots=True)
class Call:
    call_id: str
    outgoing: bool
    state: CallState
    invite: Request
    dest: Addr
    transport: str
    local_tag: str
    media_address: str = ""
    media_port: int = 0
    sdp_session_id: int = 0
    sdp_version: int = 1
    local_sdp: bytes | None = None
    media: MediaParams | None = None
    dialog: Dialog | None = None
    invite_tx_key: str | None = None
    server_tx: ServerTransaction | None = None
    reinvite_tx: ServerTransaction | None = None
    provisional_seen: bool = False
    cancel_pending: bool = False
    acks: dict[int, tuple[bytes, Addr, str]] = field(default_factory=dict)
    """ACK per INVITE CSeq (initial and re-INVITEs), re-sent for each resent 2xx"""
    final_status: int | None = None
    final_reason: str = ""
    answered: bool = False
    session_expires_s: int | None = None
    refresh_at: float | None = None
    expire_at: float | None = None
    give_up_at: float | None = None
    forget_at: float | None = None
    """when an ended call is dropped: late 2xx resends still get their ACK until then"""
    timers: dict[str, float] = field(default_factory=dict)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name in _DEADLINES:
            timer_version.bump()  # the agent's earliest deadline may have moved

    def set_state(self, new: CallState) -> None:
        if new is self.state:
            return
        if new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"call {self.call_id}: illegal move {self.state.name} -> {new.name}")
        bind(log, call=self.call_id).info("call state %s -> %s", self.state.value, new.value)
        self.state = new

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    def next_deadline(self) -> float | None:
        best = self.refresh_at
        for t in (self.expire_at, self.give_up_at, self.forget_at):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def schedule_session_timer(self, expires_s: int, we_refresh: bool, now: float) -> None:
        """RFC 4028 §10: the refresher sends a refresh at half the interval; the other side ends
        the session if none arrives by expiry minus min(32 s, interval/3)."""
        self.session_expires_s = expires_s
        if we_refresh:
            self.refresh_at = now + expires_s / 2
            self.expire_at = None
        else:
            self.refresh_at = None
            self.expire_at = now + expires_s - min(32.0, expires_s / 3)


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """`Session-Expires: 1800;refresher=uac` -> (1800, "uac")."""
    if not value:
        return None
    m = re.match(r"\s*(\d{1,9})\s*(?:;(.*))?$", value)
    if not m:
        raise RemoteProtocolError(f"malformed Session-Expires {value!r}")
    refresher = None
    for p in (m.group(2) or "").split(";"):
        name, _, v = p.strip().partition("=")
        if name.lower() == "refresher":
            refresher = v.strip().lower()
    return int(m.group(1)), refresher


_KEYS = "0123456789*#ABCD"
# RFC 4733 event numbers 10 and 11 are * and #; some gateways send the number in Signal=.
_EVENT_KEYS = {str(i): k for i, k in enumerate(_KEYS)}


def parse_dtmf_info(content_type: str, body: bytes) -> tuple[str, int | None] | None:
    """The key and duration in an INFO body, or None when the type is not a DTMF one."""
    ctype = content_type.split(";")[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if ctype == "application/dtmf-relay":
        fields: dict[str, str] = {}
        for line in text.replace("\r", "\n").split("\n"):
            name, sep, value = line.partition("=")
            if sep:
                fields[name.strip().lower()] = value.strip()
        sig = fields.get("signal", "").upper()
        if not sig:
            raise RemoteProtocolError("dtmf-relay without Signal")
        key = sig if sig in _KEYS else _EVENT_KEYS.get(sig)
        if key is None:
            raise RemoteProtocolError(f"unknown DTMF signal {sig!r}")
        dur = fields.get("duration", "")
        return key, int(dur) if dur.isdigit() else None
    if ctype == "application/dtmf":
        sig = text.strip().upper()
        key = sig if sig in _KEYS and len(sig) == 1 else _EVENT_KEYS.get(sig)
        if key is None:
            raise RemoteProtocolError(f"unknown DTMF signal {sig!r}")
        return key, None
    return None
