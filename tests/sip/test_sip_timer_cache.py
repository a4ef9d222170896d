"""The agent's kept earliest deadline is never later than a full scan of its transactions and
calls (a late timer is a missed retransmission), across lossy call flows on a fake clock."""

from __future__ import annotations

import random

from sipcores import events, make_agent, transfer

from voip_sos.sip import IncomingCall, SipAgent
from voip_sos.sip.message import Message


def scanned(agent: SipAgent) -> float | None:
    best = agent._earliest_deadline()
    reg = agent.registration.next_attempt_at
    return reg if best is None or (reg is not None and reg < best) else best


def test_kept_deadline_matches_a_full_scan_through_lossy_calls() -> None:
    rng = random.Random(7)
    a = make_agent("alice", 5071)
    b = make_agent("bob", 5072, accept_incoming=True)
    now = 0.0

    def lossy(_: Message, __: object) -> bool:
        return rng.random() < 0.3

    calls: list[str] = []
    for step in range(400):
        action = rng.random()
        if action < 0.15:
            calls.append(a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000 + 2 * step, now))
        elif action < 0.3:
            for ev in events(b):
                if isinstance(ev, IncomingCall) and rng.random() < 0.7:
                    b.answer(ev.call_id, "127.0.0.1", 30000, now)
        elif action < 0.4 and calls:
            cid = rng.choice(calls)
            if cid in a.calls and not a.calls[cid].ended:
                a.hangup(cid, now)
        transfer([a, b], now, drop=lossy)
        events(a)
        for agent in (a, b):
            assert agent.get_timer() == scanned(agent), step
            t = agent.get_timer()
            if t is not None and t <= now:
                agent.handle_timer(now)
                assert agent.get_timer() == scanned(agent), step
        now += rng.choice((0.01, 0.1, 0.5, 2.0, 8.0))
    assert calls  # the flow did place calls


def test_a_call_deadline_moving_alone_moves_the_kept_deadline() -> None:
    a = make_agent("alice", 5071)
    b = make_agent("bob", 5072, accept_incoming=True)
    cid = a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    transfer([a, b], 0.0)
    before = a.get_timer()
    call = a.calls[cid]
    call.refresh_at = 0.001  # e.g. a session timer: no transaction moved
    assert a.get_timer() == 0.001
    call.refresh_at = None
    assert a.get_timer() == before == scanned(a)
