"""The STB agent core on a fake clock: retry schedule, failover, answers, clock correction, STATUS."""

from __future__ import annotations

import itertools

import pytest

from tests.sos.test_sos_listener_core import A_IP, A_KEY, DIRECTORY, WALL0
from voip_sos.errors import LocalProtocolError
from voip_sos.sos.events import Addr, RequestAuthenticated, RequestParsed, StatusSeen
from voip_sos.sos.listener import ListenerSettings, SosListener
from voip_sos.sos.wire import Message, MsgType, RejectReason, StatusCode, encode, parse
from voip_sos.stb import (
    AgentState,
    ClockCorrected,
    ReceiptReceived,
    RejectReceived,
    RequestTimedOut,
    StatusReceived,
    StbAgent,
)
from voip_sos.stb.events import AgentEvent

PRIMARY: Addr = ("127.0.0.1", 4750)
SECONDARY: Addr = ("127.0.0.2", 4750)
STB_ADDR: Addr = (A_IP, 40000)


def agent(backends: list[Addr] | None = None, wall: float = WALL0) -> StbAgent:
    return StbAgent(A_IP, A_KEY, backends or [PRIMARY, SECONDARY], lambda: wall)


def events(a: StbAgent) -> list[AgentEvent]:
    return list(iter(a.next_event, None))


def test_retry_schedule_failover_and_give_up() -> None:
    a = agent()
    rid = a.send(MsgType.SOS, 0.0)
    sent: list[tuple[float, Addr]] = [(0.0, a.datagrams_to_send(0.0)[0][1])]
    requests = set()
    while (t := a.get_timer()) is not None:
        a.handle_timer(t)
        for data, addr in a.datagrams_to_send(t):
            sent.append((t, addr))
            msg = parse(data)
            requests.add((msg.request_id, msg.seq))
            assert msg.timestamp_ms == int(WALL0 * 1000) and msg.verify(A_KEY)
    assert requests == {(rid, 1)}  # every retry is the same request
    times = [t for t, _ in sent]
    assert times[:7] == [0.0, 0.25, 0.75, 1.75, 3.75, 7.75, 11.75]
    assert all(b - a_ == 4.0 for a_, b in itertools.pairwise(times[5:]))
    assert times[-1] < 120.0
    order = [addr for _, addr in sent]
    assert order[:3] == [PRIMARY] * 3
    assert order[3:9] == [SECONDARY, PRIMARY, SECONDARY, PRIMARY, SECONDARY, PRIMARY]
    [ev] = events(a)
    assert isinstance(ev, RequestTimedOut) and ev.tries == len(sent) and ev.elapsed_s == 120.0
    assert a.state is AgentState.TIMED_OUT


def test_single_backend_never_fails_over() -> None:
    a = agent([PRIMARY])
    a.send(MsgType.HEARTBEAT, 0.0)
    for _ in range(6):
        t = a.get_timer()
        assert t is not None
        a.handle_timer(t)
    assert {addr for _, addr in a.datagrams_to_send(10.0)} == {PRIMARY}


def transfer(a: StbAgent, core: SosListener, now: float, *, deliver: bool = True) -> None:
    """Move datagrams both ways between an agent and a listener core, recording as the adapter would."""
    for data, _ in a.datagrams_to_send(now):
        if deliver:
            core.receive_datagram(data, STB_ADDR, now)
    while (ev := core.next_event()) is not None:
        if isinstance(ev, RequestParsed):
            core.lookup_done(ev.ticket, DIRECTORY.get(ev.ip), now)
        elif isinstance(ev, RequestAuthenticated):
            core.recorded(ev.ticket, 11, now)
    for data, _addr in core.datagrams_to_send(now):
        if deliver:
            a.receive_datagram(data, PRIMARY, now)


def test_loss_then_receipt_then_status_and_seen() -> None:
    a, core = agent(), SosListener(ListenerSettings(), lambda: WALL0)
    rid = a.send(MsgType.SOS, 0.0)
    transfer(a, core, 0.0, deliver=False)  # try 1 lost
    a.handle_timer(0.25)
    transfer(a, core, 0.25, deliver=False)  # try 2 lost
    a.handle_timer(0.75)
    transfer(a, core, 0.75)
    [ev] = events(a)
    assert isinstance(ev, ReceiptReceived) and ev.request_id == rid and ev.incident_id == 11 and ev.tries == 3
    assert ev.elapsed_s == 0.75 and a.get_timer() is None and a.state is AgentState.ANSWERED
    core.send_status(11, A_IP, StatusCode.CALLING, 1.0)
    for data, _ in core.datagrams_to_send(1.0):
        a.receive_datagram(data, PRIMARY, 1.0)
        a.receive_datagram(data, PRIMARY, 1.1)  # resent STATUS: SEEN again, reported once
    [st] = events(a)
    assert isinstance(st, StatusReceived) and st.status is StatusCode.CALLING and st.status_seq == 1
    seens = a.datagrams_to_send(1.1)
    assert len(seens) == 2 and all(parse(d).type is MsgType.SEEN for d, _ in seens)
    core.receive_datagram(seens[0][0], STB_ADDR, 1.2)
    assert any(isinstance(e, StatusSeen) for e in iter(core.next_event, None)) and core.get_timer() is None


def test_forged_and_foreign_replies_are_ignored() -> None:
    a = agent()
    rid = a.send(MsgType.SOS, 0.0)
    forged = [
        encode(Message(MsgType.RECEIPT, rid, 1, 0, A_IP, incident_id=1), b"k" * 32),  # wrong key
        encode(Message(MsgType.RECEIPT, b"z" * 16, 1, 0, A_IP, incident_id=1), A_KEY),  # other request
        encode(Message(MsgType.RECEIPT, rid, 1, 0, "127.0.1.2", incident_id=1), A_KEY),  # other STB
        encode(Message(MsgType.SOS, rid, 1, 0, A_IP), A_KEY),  # not a reply
        b"\x01junk",
    ]
    for data in forged:
        a.receive_datagram(data, PRIMARY, 0.1)
    assert events(a) == [] and a.state is AgentState.SENDING and a.dropped == len(forged)


def test_clock_reject_corrects_the_clock_and_resends_once() -> None:
    a = agent(wall=WALL0 - 3600)  # an hour slow
    core = SosListener(ListenerSettings(check_clock=True, clock_window_s=30), lambda: WALL0)
    a.send(MsgType.SOS, 0.0)
    transfer(a, core, 0.0)
    assert isinstance(events(a)[0], ClockCorrected) and a.clock_offset_s == pytest.approx(3600)
    transfer(a, core, 0.01)
    [ev] = events(a)
    assert isinstance(ev, ReceiptReceived) and ev.tries == 2
    assert core.counters["clock"] == 1


def test_reject_ends_the_request() -> None:
    a = agent()
    rid = a.send(MsgType.CANCEL, 0.0)
    reject = encode(Message(MsgType.REJECT, rid, 1, 5, A_IP, reason=RejectReason.NO_INCIDENT), A_KEY)
    a.receive_datagram(reject, PRIMARY, 0.3)
    [ev] = events(a)
    assert (
        isinstance(ev, RejectReceived) and ev.reason is RejectReason.NO_INCIDENT and ev.backend_time_ms == 5
    )
    assert a.get_timer() is None
    a.receive_datagram(reject, PRIMARY, 0.4)  # a duplicate REJECT changes nothing
    assert events(a) == []


def test_one_request_at_a_time() -> None:
    a = agent()
    a.send(MsgType.SOS, 0.0)
    with pytest.raises(LocalProtocolError, match="cannot go from sending to sending"):
        a.send(MsgType.SOS, 0.1)
    with pytest.raises(LocalProtocolError, match="does not send SEEN"):
        agent().send(MsgType.SEEN, 0.0)
    with pytest.raises(LocalProtocolError, match="UPDATE carries no fields"):
        agent().send(MsgType.UPDATE, 0.0)
