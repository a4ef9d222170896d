"""The incident core with a fake clock: calls, retries, failover, confirmation, cancel, codes."""

from __future__ import annotations

import dataclasses

import pytest

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
    PlaceCall,
    SendSms,
    SendStatus,
    SmsKind,
    StbStatus,
)
from voip_sos.incidents.core import IncidentCore, PartyState, Policy

POLICY = Policy(center="120", backup="999120", test_number="9999", centre_language="en", redial=1,
                redial_pause_s=10, ring_timeout_s=30, max_call_s=300)  # fmt: skip
CONTACTS = (Contact("Son", "+8613800000001"), Contact("Daughter", "+8613900000002"))


def drain(core: IncidentCore) -> list[Command]:
    out = []
    while (c := core.next_command()) is not None:
        out.append(c)
    return out


def calls(cmds: list[Command]) -> list[tuple[str, str]]:
    return [(c.call_id, c.number) for c in cmds if isinstance(c, PlaceCall)]


def statuses(cmds: list[Command]) -> list[StbStatus]:
    return [c.status for c in cmds if isinstance(c, SendStatus)]


def test_start_calls_centre_and_every_contact_and_texts_them_at_once() -> None:
    core = IncidentCore("I1", POLICY, CONTACTS, "zh")
    core.start(0.0)
    cmds = drain(core)
    assert statuses(cmds) == [StbStatus.CALLING]
    assert calls(cmds) == [
        ("centre#1", "120"),
        ("contact:0#1", "+8613800000001"),
        ("contact:1#1", "+8613900000002"),
    ]
    placed = [c for c in cmds if isinstance(c, PlaceCall)]
    assert placed[0].emergency and placed[0].language == "en"
    assert not placed[1].emergency and placed[1].language == "zh"
    assert [(s.number, s.kind) for s in cmds if isinstance(s, SendSms)] == [
        ("120", SmsKind.EMERGENCY), ("+8613800000001", SmsKind.EMERGENCY), ("+8613900000002", SmsKind.EMERGENCY)
    ]  # fmt: skip
    assert core.get_timer() == 30.0  # ring timeouts


def test_busy_redials_after_pause_then_fails_over_to_backup() -> None:
    core = IncidentCore("I1", POLICY, (), "en")
    core.start(0.0)
    drain(core)
    core.handle_event(CallEnded("centre#1", confirmed=False, answered=False, status=486), 1.0)
    assert drain(core) == []
    assert core.get_timer() == 11.0
    core.handle_timer(11.0)
    assert calls(drain(core)) == [("centre#2", "120")]
    core.handle_event(CallEnded("centre#2", confirmed=False, answered=False, status=503), 12.0)
    core.handle_timer(22.0)
    cmds = drain(core)
    assert calls(cmds) == [("centre#3", "999120")]
    assert [(s.number, s.kind) for s in cmds if isinstance(s, SendSms)] == [("999120", SmsKind.EMERGENCY)]


def test_no_answer_is_cancelled_at_ring_timeout_and_retried() -> None:
    core = IncidentCore("I1", POLICY, (), "en")
    core.start(0.0)
    drain(core)
    core.handle_event(CallRinging("centre#1"), 0.5)
    core.handle_timer(29.9)
    assert drain(core) == []
    core.handle_timer(30.0)
    assert drain(core) == [CancelCall("centre#1", "no answer")]
    core.handle_event(CallEnded("centre#1", confirmed=False, answered=False, status=487), 30.1)
    core.handle_timer(40.1)
    assert calls(drain(core)) == [("centre#2", "120")]


def test_answered_without_key_is_unconfirmed_and_retried() -> None:
    core = IncidentCore("I1", POLICY, (), "en")
    core.start(0.0)
    drain(core)
    core.handle_event(CallAnswered("centre#1"), 2.0)
    assert core.get_timer() is None  # no ring timeout once answered
    core.handle_event(CallEnded("centre#1", confirmed=False, answered=True, status=200), 60.0)
    assert core.party_states()["centre"] is PartyState.DUE
    core.handle_timer(70.0)
    assert calls(drain(core)) == [("centre#2", "120")]


def test_confirmation_by_centre_and_close_when_everyone_is_done() -> None:
    core = IncidentCore("I1", POLICY, CONTACTS[:1], "en")
    core.start(0.0)
    drain(core)
    core.handle_event(CallAnswered("centre#1"), 2.0)
    core.handle_event(CallEnded("centre#1", confirmed=True, answered=True, status=200), 20.0)
    assert statuses(drain(core)) == [StbStatus.CONFIRMED_BY_CENTRE]
    core.handle_event(CallAnswered("contact:0#1"), 3.0)
    core.handle_event(CallEnded("contact:0#1", confirmed=True, answered=True, status=200), 25.0)
    cmds = drain(core)
    assert statuses(cmds) == [StbStatus.CLOSED]  # already told the better news: centre confirmed
    assert cmds[-1] == CloseIncident("reached")
    assert core.closed and core.reached == ["centre", "contact:0"]


def test_nobody_reached_after_all_retries() -> None:
    core = IncidentCore("I1", POLICY, (), "en")
    core.start(0.0)
    drain(core)
    t = 0.0
    for attempt in range(1, 5):
        core.handle_event(CallEnded(f"centre#{attempt}", confirmed=False, answered=False, status=480), t + 1)
        t = core.get_timer() or t
        core.handle_timer(t)
    cmds = drain(core)
    assert calls(cmds) == [("centre#2", "120"), ("centre#3", "999120"), ("centre#4", "999120")]
    assert statuses(cmds) == [StbStatus.NOBODY_REACHED, StbStatus.CLOSED]
    assert cmds[-1] == CloseIncident("unreached")


def test_sequential_contacts_stop_at_first_confirmation() -> None:
    policy = Policy(center=None, backup=None, test_number=None, centre_language="en", redial=0,
                    contacts_mode="sequential")  # fmt: skip
    three = (*CONTACTS, Contact("Neighbour", "5550100"))
    core = IncidentCore("I1", policy, three, "en")
    core.start(0.0)
    cmds = drain(core)
    assert calls(cmds) == [("contact:0#1", "+8613800000001")]
    assert len([c for c in cmds if isinstance(c, SendSms)]) == 3  # everyone is texted at once
    core.handle_event(CallEnded("contact:0#1", confirmed=False, answered=False, status=486), 1.0)
    assert calls(drain(core)) == [("contact:1#1", "+8613900000002")]
    core.handle_event(CallEnded("contact:1#1", confirmed=True, answered=True, status=200), 2.0)
    cmds = drain(core)
    assert statuses(cmds) == [StbStatus.CONFIRMED_BY_CONTACT, StbStatus.CLOSED]
    assert core.party_states()["contact:2"] is PartyState.STOPPED


def test_cancel_stops_ringing_keeps_answered_and_tells_everyone() -> None:
    core = IncidentCore("I1", POLICY, CONTACTS, "en")
    core.start(0.0)
    drain(core)
    core.handle_event(CallAnswered("centre#1"), 1.0)
    core.handle_event(CallRinging("contact:0#1"), 1.0)
    core.handle_event(CallEnded("contact:1#1", confirmed=False, answered=False, status=486), 1.0)
    core.handle_event(CancelRequested(), 2.0)
    cmds = drain(core)
    assert [c for c in cmds if isinstance(c, CancelCall)] == [CancelCall("contact:0#1", "false alarm")]
    assert [(s.number, s.kind) for s in cmds if isinstance(s, SendSms)] == [
        ("120", SmsKind.FALSE_ALARM), ("+8613800000001", SmsKind.FALSE_ALARM), ("+8613900000002", SmsKind.FALSE_ALARM)
    ]  # fmt: skip
    assert statuses(cmds) == [StbStatus.CLOSED]  # the TV is told at once
    assert core.get_timer() is None  # the pending redial of contact 1 is dropped
    core.handle_event(CallEnded("contact:0#1", confirmed=False, answered=False, status=487), 2.1)
    assert not core.closed  # the centre's answered call goes on
    core.handle_event(CallEnded("centre#1", confirmed=False, answered=True, status=200), 50.0)
    cmds = drain(core)
    assert cmds == [CloseIncident("false_alarm")] and core.closed  # CLOSED was already sent


def test_codes_follow_up_once_to_everyone_told() -> None:
    core = IncidentCore("I1", POLICY, CONTACTS[:1], "en")
    core.start(0.0)
    drain(core)
    core.handle_event(CodesUpdated(door_code="482913", parking_code=None), 1.0)
    cmds = drain(core)
    assert [(s.number, s.kind, s.door_code) for s in cmds if isinstance(s, SendSms)] == [
        ("120", SmsKind.CODES, "482913"), ("+8613800000001", SmsKind.CODES, "482913")
    ]  # fmt: skip
    core.handle_event(CodesUpdated(door_code="482913", parking_code=None), 2.0)
    assert drain(core) == []
    core.handle_event(CodesUpdated(door_code=None, parking_code="P-7731"), 3.0)
    sms = [s for s in drain(core) if isinstance(s, SendSms)]
    assert [(s.door_code, s.parking_code) for s in sms] == [("482913", "P-7731")] * 2


def codes_sms(cmds: list[Command]) -> list[tuple[str | None, str | None]]:
    return [(s.door_code, s.parking_code) for s in cmds if isinstance(s, SendSms) and s.kind is SmsKind.CODES]


def test_hub_codes_are_authoritative_and_the_stb_repeat_is_recognised() -> None:
    core = IncidentCore("I1", POLICY, CONTACTS[:1], "en")
    core.start(0.0)
    drain(core)
    core.handle_event(CodesUpdated("482913", None, from_hub=True), 1.0)
    assert codes_sms(drain(core)) == [("482913", None)] * 2
    core.handle_event(CodesUpdated("482913", None), 1.1)  # the STB's UPDATE with the same code
    assert drain(core) == []
    core.handle_event(CodesUpdated("999999", None), 1.2)  # an STB code that differs: the hub's stands
    assert drain(core) == []
    core.handle_event(CodesUpdated("999999", "P-1"), 1.3)  # but a part the hub has not reported counts
    assert codes_sms(drain(core)) == [("482913", "P-1")] * 2
    core.handle_event(CodesUpdated(None, "P-2", from_hub=True), 1.4)  # the hub corrects the STB
    assert codes_sms(drain(core)) == [("482913", "P-2")] * 2


def test_codes_settle_window_sends_one_text_with_both_codes() -> None:
    policy = dataclasses.replace(POLICY, codes_settle_s=1.0)
    core = IncidentCore("I1", policy, CONTACTS[:1], "en")
    core.start(0.0)
    drain(core)
    ring_timeout = core.get_timer()
    core.handle_event(CodesUpdated("482913", None, from_hub=True), 5.0)
    assert drain(core) == [] and core.get_timer() == 6.0
    core.handle_event(CodesUpdated("482913", None), 5.1)  # the STB repeats the door code
    core.handle_event(CodesUpdated(None, "P-1", from_hub=True), 5.5)  # the parking pass arrives
    core.handle_event(CodesUpdated("482913", "P-1"), 5.6)
    assert drain(core) == [] and core.get_timer() == 6.0
    core.handle_timer(6.0)
    assert codes_sms(drain(core)) == [("482913", "P-1")] * 2
    assert core.get_timer() == ring_timeout
    core.handle_event(CodesUpdated("482913", "P-1"), 7.0)
    assert drain(core) == [] and core.get_timer() == ring_timeout


def test_waiting_codes_text_goes_out_before_the_close() -> None:
    policy = dataclasses.replace(POLICY, codes_settle_s=1.0)
    core = IncidentCore("I1", policy, (), "en")
    core.start(0.0)
    drain(core)
    core.handle_event(CallAnswered("centre#1"), 1.0)
    core.handle_event(CodesUpdated("482913", None, from_hub=True), 2.0)
    core.handle_event(CallEnded("centre#1", confirmed=True, answered=True, status=200), 2.5)
    cmds = drain(core)
    assert codes_sms(cmds) == [("482913", None)]
    assert cmds[-1] == CloseIncident("reached")


def test_test_mode_calls_and_texts_only_the_test_number() -> None:
    core = IncidentCore("I1", POLICY, CONTACTS, "en", test=True)
    core.start(0.0)
    cmds = drain(core)
    assert calls(cmds) == [("test#1", "9999")]
    assert [s.number for s in cmds if isinstance(s, SendSms)] == ["9999"]


def test_late_events_for_old_calls_are_ignored() -> None:
    core = IncidentCore("I1", POLICY, (), "en")
    core.start(0.0)
    drain(core)
    core.handle_event(CallEnded("centre#1", confirmed=False, answered=False, status=486), 1.0)
    core.handle_event(CallAnswered("centre#1"), 1.5)
    core.handle_event(CallEnded("nope#1", confirmed=True, answered=True, status=200), 1.5)
    assert core.party_states()["centre"] is PartyState.DUE


def test_nobody_to_call_is_refused() -> None:
    empty = Policy(center=None, backup=None, test_number=None, centre_language="en")
    with pytest.raises(LocalProtocolError, match="nobody to call"):
        IncidentCore("I1", empty, (), "en")
    with pytest.raises(LocalProtocolError, match="test_number"):
        IncidentCore("I1", empty, CONTACTS, "en", test=True)


def test_resume_after_restart_skips_confirmed_and_told() -> None:
    core = IncidentCore("I1", POLICY, CONTACTS, "en")
    core.resume(100.0, confirmed={"centre"}, told=[("centre", "120"), ("contact:0", "+8613800000001")],
                door_code="482913")  # fmt: skip
    cmds = drain(core)
    assert statuses(cmds) == [StbStatus.CONFIRMED_BY_CENTRE]
    assert calls(cmds) == [("contact:0#1", "+8613800000001"), ("contact:1#1", "+8613900000002")]
    sms = [s for s in cmds if isinstance(s, SendSms)]
    assert [(s.number, s.kind, s.door_code) for s in sms] == [("+8613900000002", SmsKind.EMERGENCY, "482913")]
    core.handle_event(CodesUpdated(door_code="482913", parking_code=None), 101.0)
    assert drain(core) == []  # already known before the crash


def test_resume_with_everyone_confirmed_closes() -> None:
    core = IncidentCore("I1", POLICY, CONTACTS[:1], "en")
    core.resume(
        5.0, confirmed={"centre", "contact:0"}, told=[("centre", "120"), ("contact:0", "+8613800000001")]
    )
    cmds = drain(core)
    assert cmds[-1] == CloseIncident("reached") and core.closed
