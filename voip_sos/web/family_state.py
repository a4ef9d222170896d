"""What the family's page shows, built from an incident's log: a pure function, no I/O.

`family_state()` turns the incident row, its event log (as the runner and the SOS listener wrote
it) and the codes the hub reported into one JSON-ready dict. The page renders it in the reader's
language, so the dict carries step codes and parameters, never sentences.

Privacy: the reader holds one contact's link. Phone numbers (the centre's, the other contacts',
their own) are masked to the last 4 digits; SMS texts (which carry the voice link) and SIP dialog
state never leave the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from voip_sos.incidents.store import Incident, IncidentEvent

__all__ = [
    "HUB_DOOR_CODE",
    "HUB_EXPIRED",
    "HUB_PARKING_PASS",
    "REVOKE_REQUESTED",
    "REVOKE_RESULT",
    "STATUSES",
    "ClipView",
    "Codes",
    "family_state",
    "language_of",
    "mask_number",
]

HUB_DOOR_CODE = "hub_door_code"
HUB_PARKING_PASS = "hub_parking_pass"
HUB_EXPIRED = "hub_code_expired"
"""Log kinds for the hub's MQTT events (door_code, parking_pass, expired), if the backend logs them."""
CLIP_STORED = "clip_stored"
CLIP_DELETED = "clip_deleted"
"""Log kinds of the clip archive (voip_sos/clips/archive.py)."""
REVOKE_REQUESTED = "revoke_requested"
REVOKE_RESULT = "revoke_result"
STATUSES = ("calling", "confirmed_centre", "confirmed_contact", "nobody_reached", "closed")
"""The STB's STATUS vocabulary (voip_sos.sos.wire.StatusCode), so the TV and the page agree."""
VISIBLE_DIGITS = 4
MIN_MATCH_DIGITS = 7
"""A caller id matches a dialled number when one ends with the other and has at least this many."""
MASK = "•••• "


@dataclass(frozen=True, slots=True)
class Codes:
    """Door code and parking pass for an incident, as the hub (authoritative) reported them."""

    door_code: str | None = None
    parking_code: str | None = None
    door_valid_until: datetime | None = None
    parking_valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClipView:
    """One stored camera clip as the page lists it."""

    id: int
    camera: str
    part: str
    """recent (the last seconds before the press, first to arrive) or full."""
    duration_s: float
    bytes: int
    video_start: datetime
    video_end: datetime
    gaps: int
    """How many stretches without video the clip joins over."""


def _digits(number: object) -> str:
    return "".join(ch for ch in str(number or "") if ch.isdigit())


def mask_number(number: object) -> str:
    """`•••• 5678`: enough to recognise a number, not enough to call it."""
    digits = _digits(number)
    if not digits:
        return ""
    return MASK + digits[-VISIBLE_DIGITS:] if len(digits) > VISIBLE_DIGITS else MASK + digits


def language_of(events: Sequence[IncidentEvent]) -> str:
    """The subscriber's language as the page knows it: "zh" or "en" (the two the page speaks)."""
    for e in events:
        if e.kind == "incident_opened":
            lang = str(e.detail.get("language") or "")
            return "zh" if lang.lower().startswith("zh") else "en"
    return "en"


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _party_of_call(call_id: object, calls: dict[str, str]) -> str:
    text = str(call_id or "")
    # Call ids are "<party>#<attempt>" (IncidentCore._dial); call_placed names the party anyway.
    return calls.get(text) or text.split("#", 1)[0]


class _Builder:
    def __init__(self, reader: str) -> None:
        self.reader = reader
        self.numbers: dict[str, str] = {}  # party key -> number dialled
        self.calls: dict[str, str] = {}  # call id -> party key
        self.rung: set[str] = set()
        self.callbacks: dict[str, str] = {}  # incoming call id -> caller's number
        self.sms: dict[str, str] = {}  # SMS id -> party key
        self.timeline: list[dict[str, Any]] = []
        self.confirmed: dict[str, datetime] = {}  # party key -> when it confirmed
        self.door: str | None = None
        self.parking: str | None = None
        self.revoke: dict[str, Any] = {"state": "none"}
        self.closed_logged = False

    def who(self, party: str) -> dict[str, Any]:
        role, _, index = party.partition(":")
        out: dict[str, Any] = {"role": role, "number": mask_number(self.numbers.get(party))}
        if index.isdigit():
            out["index"] = int(index)
        if party == self.reader:
            out["you"] = True
        return out

    def step(self, e: IncidentEvent, step: str, party: str | None = None, **params: Any) -> None:
        item: dict[str, Any] = {"at": _iso(e.at), "step": step}
        if party is not None:
            item["who"] = self.who(party)
        item.update({k: v for k, v in params.items() if v is not None})
        self.timeline.append(item)

    def feed(self, e: IncidentEvent) -> None:
        d = e.detail
        kind = e.kind
        if kind == "incident_opened":
            self.step(e, "opened")
        elif kind == "call_placed":
            party = str(d.get("party") or "")
            self.calls[str(d.get("call"))] = party
            if d.get("number"):
                self.numbers[party] = str(d["number"])
            self.step(e, "calling", party, attempt=d.get("attempt"))
        elif kind == "call_ringing":
            call = str(d.get("call"))
            if call not in self.rung:  # 180 and 183 both mean "ringing" to a reader
                self.rung.add(call)
                self.step(e, "ringing", _party_of_call(call, self.calls))
        elif kind == "call_answered":
            self.step(e, "answered", _party_of_call(d.get("call"), self.calls))
        elif kind == "call_ended":
            party = _party_of_call(d.get("call"), self.calls)
            if d.get("confirmed"):
                self.confirmed.setdefault(party, e.at)
            self.step(e, "call_ended", party, result=str(d.get("result") or "ended"))
        elif kind == "call_failed":
            self.step(e, "call_ended", _party_of_call(d.get("call"), self.calls), result="failed")
        elif kind == "callback_answered":
            self.callbacks[str(d.get("call"))] = str(d.get("caller") or "")
        elif kind == "callback_ended":
            if d.get("confirmed"):
                caller = self._party_by_call_or_number(d)
                if caller is not None:
                    self.confirmed.setdefault(caller, e.at)
                self.step(e, "callback", caller, result="confirmed")
        elif kind == "sms_sending":
            sms_party = str(d.get("party") or "")
            self.sms[str(d.get("sms"))] = sms_party
            self.numbers.setdefault(sms_party, str(d.get("number") or ""))
        elif kind == "sms_result":
            to = self.sms.get(str(d.get("sms"))) or self._party_by_number(d.get("number"))
            self.step(e, "sms", to, sms=str(d.get("kind") or ""), accepted=bool(d.get("accepted")))
        elif kind == "update_received":  # the STB's UPDATE (SOS protocol)
            self._codes(e, d.get("door_code"), d.get("parking_code"))
        elif kind == HUB_DOOR_CODE:  # the hub's own events, when logged (payloads as on MQTT)
            self._codes(e, d.get("code"), None)
        elif kind == HUB_PARKING_PASS:
            self._codes(e, None, d.get("code"))
        elif kind == HUB_EXPIRED:
            self.step(e, "door_code_expired")
        elif kind == CLIP_STORED:
            self.step(e, "clip", camera=str(d.get("camera") or ""), part=str(d.get("part") or ""),
                      duration_s=d.get("duration_s"))  # fmt: skip
        elif kind == CLIP_DELETED:
            self.step(e, "clip_deleted", camera=str(d.get("camera") or ""), part=str(d.get("part") or ""))
        elif kind == "cancel_received":
            self.step(e, "cancelled")
        elif kind == "incident_closed":
            if not self.closed_logged:
                self.closed_logged = True
                self.step(e, "closed", reason=str(d.get("reason") or ""))
        elif kind == REVOKE_REQUESTED:
            self.revoke = {"state": "pending", "requested_at": _iso(e.at)}
            self.step(e, "revoke_requested", str(d.get("by") or ""))
        elif kind == REVOKE_RESULT:
            ok = bool(d.get("confirmed")) and not d.get("error")
            self.revoke = {
                "state": "done" if ok else "failed",
                "at": _iso(e.at),
                "cleared_slots": list(d.get("cleared_slots") or []),
                "confirmed": bool(d.get("confirmed")),
                "error": d.get("error"),
            }
            self.step(e, "revoked" if ok else "revoke_failed", error=d.get("error"))

    def _party_by_number(self, number: object) -> str | None:
        # Digits only, and a suffix match: a caller id may arrive as "sip:138…@pbx" for a contact
        # stored as "+86 138…" (national vs international form of the same subscriber number).
        wanted = _digits(number)
        for party, known in self.numbers.items():
            have = _digits(known)
            short, long_ = sorted((wanted, have), key=len)
            if len(short) >= MIN_MATCH_DIGITS and long_.endswith(short):
                return party
        return None

    def _party_by_call_or_number(self, d: dict[str, Any]) -> str | None:
        # A callback is an incoming call: its caller's number names the party that rang back.
        return self._party_by_number(self.callbacks.get(str(d.get("call")), d.get("caller")))

    def _codes(self, e: IncidentEvent, door: object, parking: object) -> None:
        if door and str(door) != self.door:
            self.door = str(door)
            self.step(e, "door_code")
        if parking and str(parking) != self.parking:
            self.parking = str(parking)
            self.step(e, "parking_pass")


def _status(incident: Incident, confirmed: dict[str, datetime]) -> str:
    if incident.closed_at is not None:
        return "nobody_reached" if incident.close_reason == "unreached" else "closed"
    if any(p in ("centre", "test") for p in confirmed):
        return "confirmed_centre"
    if confirmed:
        return "confirmed_contact"
    return "calling"


def family_state(
    incident: Incident,
    events: Sequence[IncidentEvent],
    *,
    reader: str,
    codes: Codes | None = None,
    can_revoke: bool = False,
    clips: Sequence[ClipView] = (),
) -> dict[str, Any]:
    """The page's view of `incident` for the contact whose party key is `reader` ("contact:0")."""
    b = _Builder(reader)
    name = ""
    for e in events:
        if e.kind == "incident_opened":
            name = str(e.detail.get("name") or "")
        b.feed(e)
    door = (codes.door_code if codes else None) or b.door
    parking = (codes.parking_code if codes else None) or b.parking
    return {
        "incident": {
            "id": incident.id,
            "opened_at": _iso(incident.opened_at),
            "test": incident.test,
            "subscriber": name,
        },
        "language": language_of(events),
        "you": b.who(reader),
        "status": _status(incident, b.confirmed),
        "closed": (
            {"at": _iso(incident.closed_at), "reason": incident.close_reason}
            if incident.closed_at is not None
            else None
        ),
        "reached": [
            {**b.who(p), "at": _iso(at)} for p, at in sorted(b.confirmed.items(), key=lambda kv: kv[1])
        ],
        "codes": {
            "door_code": door,
            "parking_code": parking,
            "door_valid_until": _iso(codes.door_valid_until) if codes else None,
            "parking_valid_until": _iso(codes.parking_valid_until) if codes else None,
        },
        "revoke": {**b.revoke, "available": can_revoke},
        "clips": [
            {
                "id": c.id,
                "camera": c.camera,
                "part": c.part,
                "duration_s": round(c.duration_s, 1),
                "bytes": c.bytes,
                "start": _iso(c.video_start),
                "end": _iso(c.video_end),
                "gaps": c.gaps,
            }
            for c in clips
        ],
        "timeline": b.timeline,
    }
