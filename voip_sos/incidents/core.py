"""The incident core: who to call and text, when to retry, what the STB is told (F5-F7).

How this works. An incident has *parties*: the emergency centre (its number, then the backup number
once the centre's redials are spent), each contact, or only the test number for a TEST request. Each
party has a dial plan: its number `1 + redial` times. A party is *reached* only when the callee
pressed 1 — voicemail and phone menus answer calls too, so an answered call that ends without the
key is retried like a busy one. The core is sans-IO: it takes events and `now` (monotonic seconds),
queues commands (place call, cancel call, send SMS, send STATUS, close) and exposes one deadline
(`get_timer()`: the earliest ring timeout or redial). It never sleeps and never touches a socket.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass

from voip_sos.directory.records import Contact
from voip_sos.errors import LocalProtocolError
from voip_sos.incidents.commands import (
    CallAnswered,
    CallEnded,
    CallRinging,
    CancelCall,
    CancelRequested,
    CloseIncident,
    CodesUpdated,
    Command,
    Event,
    PartyRole,
    PlaceCall,
    SendSms,
    SendStatus,
    SmsKind,
    SmsSent,
    StbStatus,
)

__all__ = ["IncidentCore", "PartyState", "Policy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Policy:
    """The deployment's rules for one incident (from the `emergency` config section)."""

    center: str | None
    backup: str | None
    test_number: str | None
    centre_language: str
    redial: int = 2
    redial_pause_s: float = 10.0
    ring_timeout_s: float = 40.0
    max_call_s: float = 300.0
    contacts_mode: str = "parallel"
    codes_settle_s: float = 0.0
    """After a code arrives, wait this long for the other before the follow-up SMS (0: at once)."""


class PartyState(enum.Enum):
    WAITING = "waiting"  # not started yet (sequential contacts)
    DUE = "due"  # a (re)dial is scheduled at retry_at
    DIALING = "dialing"  # INVITE sent
    RINGING = "ringing"
    ANSWERED = "answered"  # the message is playing
    CONFIRMED = "confirmed"  # pressed 1: reached
    EXHAUSTED = "exhausted"  # every dial of the plan failed
    STOPPED = "stopped"  # never to be called (cancelled, or sequential and someone confirmed)


_TRANSITIONS: dict[PartyState, frozenset[PartyState]] = {
    PartyState.WAITING: frozenset({PartyState.DIALING, PartyState.STOPPED}),
    PartyState.DUE: frozenset({PartyState.DIALING, PartyState.STOPPED}),
    PartyState.DIALING: frozenset(
        {PartyState.RINGING, PartyState.ANSWERED, PartyState.DUE, PartyState.EXHAUSTED, PartyState.STOPPED}
    ),
    PartyState.RINGING: frozenset(
        {PartyState.ANSWERED, PartyState.DUE, PartyState.EXHAUSTED, PartyState.STOPPED}
    ),
    PartyState.ANSWERED: frozenset(
        {PartyState.CONFIRMED, PartyState.DUE, PartyState.EXHAUSTED, PartyState.STOPPED}
    ),
    PartyState.CONFIRMED: frozenset(),
    PartyState.EXHAUSTED: frozenset(),
    PartyState.STOPPED: frozenset(),
}
_LIVE = frozenset({PartyState.DIALING, PartyState.RINGING, PartyState.ANSWERED})
_FINAL = frozenset({PartyState.CONFIRMED, PartyState.EXHAUSTED, PartyState.STOPPED})


@dataclass(slots=True)
class _Party:
    key: str
    role: PartyRole
    numbers: tuple[str, ...]
    language: str
    state: PartyState = PartyState.WAITING
    dialled: int = 0
    call_id: str | None = None
    ring_deadline: float | None = None
    retry_at: float | None = None
    cancelling: bool = False

    @property
    def emergency(self) -> bool:
        return self.role is PartyRole.CENTRE


class IncidentCore:
    """One incident's decisions. Feed `start`, `handle_event`, `handle_timer`; drain `next_command`."""

    def __init__(
        self,
        incident_id: str,
        policy: Policy,
        contacts: tuple[Contact, ...],
        subscriber_language: str,
        *,
        test: bool = False,
    ) -> None:
        self.incident_id = incident_id
        self._policy = policy
        self._commands: deque[Command] = deque()
        self._parties: list[_Party] = []
        self._calls: dict[str, _Party] = {}
        self._told: list[tuple[str, str]] = []  # (party key, number) of every SMS sent, in order
        self._door_code: str | None = None
        self._parking_code: str | None = None
        self._hub_door = False  # the door code came from the hub's own event (authoritative)
        self._hub_parking = False
        self._codes_texted: tuple[str | None, str | None] = (None, None)
        self._codes_due_at: float | None = None  # follow-up SMS waiting for the other code
        self._status: StbStatus | None = None
        self._cancelled = False
        self._closed = False
        self._sms_seq = 0
        plan = 1 + max(0, policy.redial)
        if test:
            if not policy.test_number:
                raise LocalProtocolError("a TEST request needs emergency.test_number")
            self._parties.append(
                _Party("test", PartyRole.TEST, (policy.test_number,) * plan, policy.centre_language)
            )
        else:
            numbers = (policy.center,) * plan if policy.center else ()
            numbers += (policy.backup,) * plan if policy.backup else ()
            if numbers:
                self._parties.append(_Party("centre", PartyRole.CENTRE, numbers, policy.centre_language))
            for i, c in enumerate(contacts):
                self._parties.append(
                    _Party(f"contact:{i}", PartyRole.CONTACT, (c.phone,) * plan, subscriber_language)
                )
        if not self._parties:
            raise LocalProtocolError("nobody to call: no emergency.center and no contacts")

    # -- public surface ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def told(self) -> list[tuple[str, str]]:
        """(party key, number) of every emergency SMS queued so far."""
        return list(self._told)

    @property
    def reached(self) -> list[str]:
        """Keys of the parties that confirmed."""
        return [p.key for p in self._parties if p.state is PartyState.CONFIRMED]

    def party_states(self) -> dict[str, PartyState]:
        return {p.key: p.state for p in self._parties}

    def next_command(self) -> Command | None:
        return self._commands.popleft() if self._commands else None

    def get_timer(self) -> float | None:
        deadlines = [
            t
            for p in self._parties
            for t in (p.ring_deadline if p.state in (PartyState.DIALING, PartyState.RINGING) else None,
                      p.retry_at if p.state is PartyState.DUE else None)
            if t is not None
        ]  # fmt: skip
        if self._codes_due_at is not None:
            deadlines.append(self._codes_due_at)
        return min(deadlines) if deadlines else None

    def start(self, now: float) -> None:
        """Queue the first calls and the emergency SMS, all at once (never waiting for the voice)."""
        self._send_status(StbStatus.CALLING)
        sequential = self._policy.contacts_mode == "sequential"
        first_contact = True
        for p in self._parties:
            if p.role is PartyRole.CONTACT and sequential and not first_contact:
                continue
            if p.role is PartyRole.CONTACT:
                first_contact = False
            self._dial(p, now)
        for p in self._parties:
            self._sms(p.key, p.numbers[0], SmsKind.EMERGENCY)

    def resume(
        self,
        now: float,
        *,
        confirmed: set[str],
        told: list[tuple[str, str]],
        door_code: str | None = None,
        parking_code: str | None = None,
    ) -> None:
        """Start again after a restart, from what the incident's log says already happened.

        Nobody who confirmed is called again; everyone else is (with a fresh dial plan: the crash
        already cost them time); an emergency SMS goes only to numbers not yet told.
        """
        self._door_code, self._parking_code = door_code, parking_code
        self._codes_texted = (door_code, parking_code)
        self._told = list(told)
        for p in self._parties:
            if p.key in confirmed:
                p.state = PartyState.CONFIRMED  # restored from the log, not a live transition
        roles = {p.role for p in self._parties if p.state is PartyState.CONFIRMED}
        if roles & {PartyRole.CENTRE, PartyRole.TEST}:
            self._send_status(StbStatus.CONFIRMED_BY_CENTRE)
        elif PartyRole.CONTACT in roles:
            self._send_status(StbStatus.CONFIRMED_BY_CONTACT)
        else:
            self._send_status(StbStatus.CALLING)
        sequential = self._policy.contacts_mode == "sequential"
        contact_confirmed = PartyRole.CONTACT in roles
        first_contact = True
        for p in self._parties:
            if p.state is not PartyState.WAITING:
                continue
            if p.role is PartyRole.CONTACT and sequential:
                if contact_confirmed or not first_contact:
                    if contact_confirmed:
                        self._set_state(p, PartyState.STOPPED)
                    continue
                first_contact = False
            self._dial(p, now)
        told_numbers = {number for _, number in self._told}
        for p in self._parties:
            if p.numbers[0] not in told_numbers:
                self._sms(p.key, p.numbers[0], SmsKind.EMERGENCY)
        self._maybe_close()

    def handle_event(self, event: Event, now: float) -> None:
        if isinstance(event, CodesUpdated):
            self._codes(event, now)
        elif isinstance(event, CancelRequested):
            self._cancel()
        elif isinstance(event, SmsSent):
            pass  # recorded by the runner; an SMS has no retry policy here (the transport retries)
        else:
            party = self._calls.get(event.call_id)
            if party is None or party.call_id != event.call_id:
                log.warning(
                    "event for an unknown or old call ignored",
                    extra={"incident": self.incident_id, "call": event.call_id},
                )
                return
            if isinstance(event, CallRinging):
                if party.state is PartyState.DIALING:
                    self._set_state(party, PartyState.RINGING)
            elif isinstance(event, CallAnswered):
                if party.state in (PartyState.DIALING, PartyState.RINGING):
                    party.ring_deadline = None
                    self._set_state(party, PartyState.ANSWERED)
            elif isinstance(event, CallEnded):
                self._ended(party, event, now)
        self._maybe_close()

    def handle_timer(self, now: float) -> None:
        if self._codes_due_at is not None and now >= self._codes_due_at:
            self._text_codes()
        for p in self._parties:
            if p.state in (PartyState.DIALING, PartyState.RINGING) and p.ring_deadline is not None:
                if now >= p.ring_deadline and not p.cancelling:
                    p.cancelling = True
                    p.ring_deadline = None
                    assert p.call_id is not None
                    self._commands.append(CancelCall(p.call_id, "no answer"))
            elif p.state is PartyState.DUE and p.retry_at is not None and now >= p.retry_at:
                self._dial(p, now)
        self._maybe_close()

    # -- internals ----------------------------------------------------------------------------

    def _set_state(self, party: _Party, new: PartyState) -> None:
        if new not in _TRANSITIONS[party.state]:
            raise LocalProtocolError(f"party {party.key}: illegal move {party.state.value} -> {new.value}")
        log.debug("party %s: %s -> %s", party.key, party.state.value, new.value,
                  extra={"incident": self.incident_id})  # fmt: skip
        party.state = new

    def _dial(self, party: _Party, now: float) -> None:
        number = party.numbers[party.dialled]
        if (
            party.role is PartyRole.CENTRE
            and party.dialled > 0
            and number != party.numbers[party.dialled - 1]
        ):
            # Moving on to the backup number: it gets the emergency SMS too.
            self._sms(party.key, number, SmsKind.EMERGENCY)
        party.dialled += 1
        party.call_id = f"{party.key}#{party.dialled}"
        party.retry_at = None
        party.cancelling = False
        party.ring_deadline = now + self._policy.ring_timeout_s
        self._calls[party.call_id] = party
        self._set_state(party, PartyState.DIALING)
        self._commands.append(
            PlaceCall(
                call_id=party.call_id,
                party=party.key,
                role=party.role,
                number=number,
                language=party.language,
                attempt=party.dialled,
                emergency=party.emergency,
                max_call_s=self._policy.max_call_s,
            )
        )

    def _ended(self, party: _Party, event: CallEnded, now: float) -> None:
        party.ring_deadline = None
        party.call_id = None
        if (event.answered or event.confirmed) and party.state in (PartyState.DIALING, PartyState.RINGING):
            self._set_state(party, PartyState.ANSWERED)  # the answer event itself may have been missed
        if event.confirmed:
            self._set_state(party, PartyState.CONFIRMED)
            self._confirmed(party)
        elif self._cancelled:
            self._set_state(party, PartyState.STOPPED)
        elif party.dialled < len(party.numbers):
            party.retry_at = now + self._policy.redial_pause_s
            self._set_state(party, PartyState.DUE)
        else:
            self._set_state(party, PartyState.EXHAUSTED)
            self._next_sequential(now)

    def _confirmed(self, party: _Party) -> None:
        if party.role in (PartyRole.CENTRE, PartyRole.TEST):
            if self._status is not StbStatus.CONFIRMED_BY_CENTRE:
                self._send_status(StbStatus.CONFIRMED_BY_CENTRE)
        elif (
            self._status is not StbStatus.CONFIRMED_BY_CENTRE
            and self._status is not StbStatus.CONFIRMED_BY_CONTACT
        ):
            self._send_status(StbStatus.CONFIRMED_BY_CONTACT)
        if party.role is PartyRole.CONTACT and self._policy.contacts_mode == "sequential":
            for p in self._parties:
                if p.role is PartyRole.CONTACT and p.state is PartyState.WAITING:
                    self._set_state(p, PartyState.STOPPED)

    def _next_sequential(self, now: float) -> None:
        if self._policy.contacts_mode != "sequential" or self._cancelled:
            return
        waiting = [p for p in self._parties if p.role is PartyRole.CONTACT and p.state is PartyState.WAITING]
        live = [
            p
            for p in self._parties
            if p.role is PartyRole.CONTACT and p.state not in _FINAL | {PartyState.WAITING}
        ]
        if waiting and not live:
            self._dial(waiting[0], now)

    def _codes(self, event: CodesUpdated, now: float) -> None:
        door, parking = event.door_code, event.parking_code
        if not event.from_hub:
            # The hub's event is authoritative: an STB UPDATE may repeat a hub code (recognised
            # below as nothing new) or fill a part the hub has not reported, never replace one.
            if self._hub_door and door and door != self._door_code:
                log.warning("STB door code differs from the hub's; the hub's stands",
                            extra={"incident": self.incident_id})  # fmt: skip
                door = None
            if self._hub_parking and parking and parking != self._parking_code:
                log.warning("STB parking code differs from the hub's; the hub's stands",
                            extra={"incident": self.incident_id})  # fmt: skip
                parking = None
        else:
            self._hub_door = self._hub_door or bool(door)
            self._hub_parking = self._hub_parking or bool(parking)
        self._door_code = door or self._door_code
        self._parking_code = parking or self._parking_code
        if (self._door_code, self._parking_code) == self._codes_texted:
            # The same codes again (hub event and STB UPDATE both carry them): text once.
            self._codes_due_at = None
            return
        if self._policy.codes_settle_s <= 0:
            self._text_codes()
        elif self._codes_due_at is None:
            # The door code and the parking pass usually arrive within moments of each other:
            # one text with both instead of two.
            self._codes_due_at = now + self._policy.codes_settle_s

    def _text_codes(self) -> None:
        self._codes_due_at = None
        if (self._door_code, self._parking_code) == self._codes_texted:
            return
        self._codes_texted = (self._door_code, self._parking_code)
        for key, number in self._unique_told():
            self._sms(key, number, SmsKind.CODES)

    def _cancel(self) -> None:
        if self._cancelled or self._closed:
            return
        self._cancelled = True
        for p in self._parties:
            if p.state in (PartyState.WAITING, PartyState.DUE):
                self._set_state(p, PartyState.STOPPED)
            elif p.state in (PartyState.DIALING, PartyState.RINGING) and not p.cancelling:
                # Ringing calls are cancelled; answered calls are never cut: a confused person or
                # an intruder must not be able to hang up on a call taker.
                p.cancelling = True
                p.ring_deadline = None
                assert p.call_id is not None
                self._commands.append(CancelCall(p.call_id, "false alarm"))
        for key, number in self._unique_told():
            self._sms(key, number, SmsKind.FALSE_ALARM)
        # The person at home asked to stop: the TV says it is over, even while an answered call
        # goes on until the call taker hangs up.
        self._send_status(StbStatus.CLOSED)

    def _unique_told(self) -> list[tuple[str, str]]:
        seen: set[str] = set()
        out = []
        for key, number in self._told:
            if number not in seen:
                seen.add(number)
                out.append((key, number))
        return out

    def _sms(self, key: str, number: str, kind: SmsKind) -> None:
        self._sms_seq += 1
        if kind is SmsKind.EMERGENCY:
            self._told.append((key, number))
        self._commands.append(
            SendSms(f"sms#{self._sms_seq}", number, key, kind, self._door_code, self._parking_code)
        )

    def _send_status(self, status: StbStatus) -> None:
        self._status = status
        self._commands.append(SendStatus(status))

    def _maybe_close(self) -> None:
        if self._closed or any(p.state not in _FINAL for p in self._parties):
            return
        if self._codes_due_at is not None:
            self._text_codes()  # a waiting follow-up goes out now: nothing runs after the close
        reached = bool(self.reached)
        if self._cancelled:
            reason = "false_alarm"
        elif reached:
            reason = "reached"
        else:
            reason = "unreached"
            self._send_status(StbStatus.NOBODY_REACHED)
        self._closed = True
        if self._status is not StbStatus.CLOSED:
            self._send_status(StbStatus.CLOSED)
        self._commands.append(CloseIncident(reason))
