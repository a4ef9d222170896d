"""family_state(): the pure mapping from an incident's log to what the family page shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from voip_sos.incidents.store import Incident, IncidentEvent
from voip_sos.web.family_state import Codes, family_state, mask_number

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def incident(*, closed: str | None = None, test: bool = False) -> Incident:
    return Incident(7, "10.0.0.7", "u7", test, "closed" if closed else "open", T0,
                    T0 + timedelta(minutes=5) if closed else None, closed)  # fmt: skip


def log(*entries: tuple[str, dict[str, Any]]) -> list[IncidentEvent]:
    return [
        IncidentEvent(i, 7, T0 + timedelta(seconds=i), kind, None, detail)
        for i, (kind, detail) in enumerate(entries)
    ]


@given(st.text(alphabet="0123456789+- ()", max_size=30))
def test_a_masked_number_shows_at_most_its_last_four_digits(number: str) -> None:
    masked = mask_number(number)
    digits = "".join(c for c in number if c.isdigit())
    shown = "".join(c for c in masked if c.isdigit())
    assert len(shown) <= 4 and digits.endswith(shown)
    assert (masked == "") == (digits == "")


def test_a_callback_confirms_the_party_that_rang_back() -> None:
    state = family_state(
        incident(),
        log(
            ("incident_opened", {"language": "zh-CN", "name": "王芳"}),
            ("call_placed", {"call": "contact:0#1", "number": "+86 138 0000 1234", "party": "contact:0"}),
            ("call_ended", {"call": "contact:0#1", "result": "no_answer", "confirmed": False}),
            ("callback_answered", {"caller": "sip:13800001234@pbx", "call": "in-1"}),
            ("callback_ended", {"call": "in-1", "by": "remote", "confirmed": True}),
        ),
        reader="contact:1",
    )
    assert state["language"] == "zh" and state["status"] == "confirmed_contact"
    assert [(r["role"], r["index"], r["number"]) for r in state["reached"]] == [("contact", 0, "•••• 1234")]
    assert state["timeline"][-1]["step"] == "callback" and state["timeline"][-1]["who"]["index"] == 0


def test_a_test_incident_confirmed_by_the_test_line_counts_as_the_centre() -> None:
    state = family_state(
        incident(test=True),
        log(
            ("call_placed", {"call": "test#1", "number": "12345", "party": "test"}),
            ("call_ended", {"call": "test#1", "result": "confirmed", "confirmed": True}),
        ),
        reader="contact:0",
    )
    assert state["status"] == "confirmed_centre" and state["incident"]["test"] is True


def test_hub_events_bring_codes_and_expiry_and_a_revoke_result_is_read_back() -> None:
    state = family_state(
        incident(closed="reached"),
        log(
            ("hub_door_code", {"code": "600001", "slot": 3}),
            ("update_received", {"door_code": "600001"}),  # the same code via the STB: one step
            ("hub_parking_pass", {"code": "P-1"}),
            ("revoke_requested", {"by": "contact:0"}),
            ("revoke_result", {"by": "contact:0", "cleared_slots": [3], "confirmed": True, "error": None}),
            ("hub_code_expired", {"slot": 3}),
        ),
        reader="contact:0",
        codes=Codes(None, "P-2"),
        can_revoke=True,
    )
    assert [s["step"] for s in state["timeline"]] == [
        "door_code", "parking_pass", "revoke_requested", "revoked", "door_code_expired",
    ]  # fmt: skip
    assert state["codes"]["door_code"] == "600001" and state["codes"]["parking_code"] == "P-2"
    assert state["revoke"]["state"] == "done" and state["revoke"]["cleared_slots"] == [3]
    assert state["status"] == "closed" and state["closed"]["reason"] == "reached"


def test_a_partial_revoke_is_a_failure_not_a_success() -> None:
    state = family_state(
        incident(),
        log(("revoke_result", {"cleared_slots": [3], "confirmed": False, "error": "slot 4 not confirmed"})),
        reader="contact:0",
    )
    assert state["revoke"]["state"] == "failed" and state["timeline"][-1]["step"] == "revoke_failed"
