"""What an incident's log says happened: read back after a restart or a take-over.

Pure: a list of `IncidentEvent` in, the facts the incident core resumes from out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voip_sos.incidents.store import IncidentEvent

__all__ = ["Replayed", "replay"]


@dataclass(frozen=True, slots=True)
class Replayed:
    confirmed: frozenset[str]
    """Parties (`centre`, `contact:0` …) who pressed 1."""
    told: tuple[tuple[str, str], ...]
    """(party, number) of every emergency text whose result was recorded."""
    door_code: str | None
    parking_code: str | None
    left_open: tuple[tuple[str, dict[str, Any]], ...]
    """(call, SIP dialog) of every answered call the log never saw end."""
    calls_finished: bool


def replay(events: Sequence[IncidentEvent]) -> Replayed:
    confirmed = frozenset(
        str(e.detail["call"]).split("#")[0]
        for e in events
        if e.kind == "call_ended" and e.detail.get("confirmed")
    )
    sent = {e.detail.get("sms") for e in events if e.kind == "sms_result"}
    told = tuple(
        (str(e.detail.get("party")), str(e.detail.get("number")))
        for e in events
        if e.kind == "sms_sending" and e.detail.get("kind") == "emergency" and e.detail.get("sms") in sent
    )
    door = parking = None
    for e in events:
        door = e.detail.get("door_code") or door
        parking = e.detail.get("parking_code") or parking
    ended = {e.detail.get("call") for e in events if e.kind in ("call_ended", "call_failed")}
    left_open = tuple(
        (str(e.detail["call"]), e.detail["dialog"])
        for e in events
        if e.kind == "call_answered" and e.detail.get("call") not in ended and e.detail.get("dialog")
    )
    finished = any(e.kind == "calls_finished" for e in events)
    return Replayed(confirmed, told, door, parking, left_open, finished)
