"""What the incident core asks the runner to do, and the events it is fed (STYLE.md section 7).

Both are frozen dataclasses: the runner records each command before carrying it out and each event
as it arrives, so an incident's log can be replayed into a fresh core after a crash.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CallAnswered",
    "CallEnded",
    "CallRinging",
    "CancelCall",
    "CancelRequested",
    "CloseIncident",
    "CodesUpdated",
    "Command",
    "Event",
    "PartyRole",
    "PlaceCall",
    "SendSms",
    "SendStatus",
    "SmsKind",
    "SmsSent",
    "StbStatus",
]


class PartyRole(enum.Enum):
    CENTRE = "centre"
    CONTACT = "contact"
    TEST = "test"


class StbStatus(enum.Enum):
    """What the TV may tell the person at home (sent to the STB as STATUS)."""

    CALLING = "calling"
    CONFIRMED_BY_CENTRE = "confirmed_by_centre"
    CONFIRMED_BY_CONTACT = "confirmed_by_contact"
    NOBODY_REACHED = "nobody_reached"
    CLOSED = "closed"


class SmsKind(enum.Enum):
    EMERGENCY = "emergency"
    CODES = "codes"
    FALSE_ALARM = "false_alarm"


# -- commands -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaceCall:
    """Dial `number` and, once answered, loop the message in `language`."""

    call_id: str
    """Unique within the incident: party key and attempt number."""
    party: str
    """Party key: "centre", "contact:0", … or "test"."""
    role: PartyRole
    number: str
    language: str
    attempt: int
    """1 for the first dial of this party, 2 for the first redial, …"""
    emergency: bool
    """Send `Priority: emergency` and the location (the centre's calls)."""
    max_call_s: float


@dataclass(frozen=True, slots=True)
class CancelCall:
    """Cancel a call that has not been answered (ring timeout, or the STB cancelled)."""

    call_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SendSms:
    """Text `number`; the runner composes the text from the incident's record and these facts."""

    sms_id: str
    number: str
    party: str
    kind: SmsKind
    door_code: str | None
    parking_code: str | None


@dataclass(frozen=True, slots=True)
class SendStatus:
    """Tell the STB how the incident stands."""

    status: StbStatus


@dataclass(frozen=True, slots=True)
class CloseIncident:
    """Nothing is left to do: close with this reason (reached, unreached, false_alarm)."""

    reason: str


Command = PlaceCall | CancelCall | SendSms | SendStatus | CloseIncident


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRinging:
    """The far end rings (180/183)."""

    call_id: str


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A 2xx arrived: the message is now playing."""

    call_id: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over, whatever the reason."""

    call_id: str
    confirmed: bool
    """The callee pressed 1 (only this counts as reached)."""
    answered: bool
    status: int | None
    """Final SIP status of the INVITE (486, 480, 487, 200 …), None if no response came."""


@dataclass(frozen=True, slots=True)
class SmsSent:
    """The SMS transport's final answer (2xx = accepted, not delivered)."""

    sms_id: str
    status: int | None


@dataclass(frozen=True, slots=True)
class CodesUpdated:
    """The STB (or the hub) reported a door code and/or parking code."""

    door_code: str | None
    parking_code: str | None
    from_hub: bool = False
    """The hub's own event (authoritative): an STB UPDATE never overrides a code the hub reported."""


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """The STB reported a false alarm."""


Event = CallRinging | CallAnswered | CallEnded | SmsSent | CodesUpdated | CancelRequested
