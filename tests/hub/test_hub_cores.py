"""The sans-IO STB and hub cores talking to each other on a fake clock: retransmission, loss,
deduplication, FINAL, give-up, and what the hub drops."""

from __future__ import annotations

from voip_sos.hub.client import HubClient
from voip_sos.hub.events import (
    CodesReceived,
    DatagramDropped,
    InstructionReceived,
    RequestTimedOut,
    RevokeConfirmed,
    RevokeRequested,
)
from voip_sos.hub.listener import CodesReply, HubListener
from voip_sos.hub.wire import Message, MsgType, PartState, encode

KEY = bytes(range(32))
STB = ("10.0.0.5", 40000)
HUB = ("10.0.0.9", 4760)


def pair() -> tuple[HubClient, HubListener]:
    return HubClient(KEY, HUB, STB[0], give_up_s=20.0), HubListener(KEY, stb_ip=STB[0])


def stb_to_hub(stb: HubClient, hub: HubListener, now: float, deliver: bool = True) -> int:
    sent = stb.datagrams_to_send(now, int(now * 1000))
    if deliver:
        for data, addr in sent:
            assert addr == HUB
            hub.receive_datagram(data, STB, now)
    return len(sent)


def hub_to_stb(hub: HubListener, stb: HubClient, now: float, deliver: bool = True) -> int:
    sent = hub.datagrams_to_send(int(now * 1000))
    if deliver:
        for data, addr in sent:
            assert addr == STB
            stb.receive_datagram(data, HUB, now)
    return len(sent)


def drain(core: HubClient | HubListener) -> list[object]:
    out = []
    while (e := core.next_event()) is not None:
        out.append(e)
    return out


def test_instruction_pending_then_codes_then_final() -> None:
    stb, hub = pair()
    rid = stb.instruct(0.0)
    assert stb_to_hub(stb, hub, 0.0) == 1
    [ev] = drain(hub)
    assert isinstance(ev, InstructionReceived) and ev.request_id == rid and ev.addr == STB
    hub_to_stb(hub, stb, 0.0)
    [pending] = drain(stb)
    assert (
        isinstance(pending, CodesReceived) and pending.door_state is PartState.PENDING and not pending.final
    )
    hub.reply_codes(rid, CodesReply(PartState.ISSUED, PartState.PENDING, door_code="123456"), 0.1)
    hub_to_stb(hub, stb, 0.1)
    [door] = drain(stb)
    assert isinstance(door, CodesReceived) and door.door_code == "123456" and not door.final
    assert stb.busy
    hub.reply_codes(rid, CodesReply(PartState.ISSUED, PartState.ISSUED, "123456", "P1"), 0.2)
    hub_to_stb(hub, stb, 0.2)
    [final] = drain(stb)
    assert isinstance(final, CodesReceived) and final.final and final.parking_code == "P1"
    assert not stb.busy and stb.get_timer() is None


def test_retransmission_schedule_and_lost_replies() -> None:
    stb, hub = pair()
    rid = stb.instruct(0.0)
    stb_to_hub(stb, hub, 0.0, deliver=False)  # lost
    times = []
    now = 0.0
    for _ in range(6):
        now = stb.get_timer()
        assert now is not None
        stb.handle_timer(now)
        times.append(now)
        stb_to_hub(stb, hub, now, deliver=False)
    assert times == [0.25, 0.75, 1.75, 3.75, 7.75, 11.75]
    # The next copy arrives; the hub starts once, and each retransmission gets the latest reply.
    stb.handle_timer(stb.get_timer() or 0)
    stb_to_hub(stb, hub, 15.75)
    assert [type(e) for e in drain(hub)] == [InstructionReceived]
    hub.reply_codes(rid, CodesReply(PartState.ISSUED, PartState.NOT_CONFIGURED, "654321"), 15.8)
    hub_to_stb(hub, stb, 15.8, deliver=False)  # the final reply is lost too
    assert stb.busy
    stb.handle_timer(stb.get_timer() or 0)
    stb_to_hub(stb, hub, 19.0)
    assert drain(hub) == []  # a retransmission starts nothing new
    hub_to_stb(hub, stb, 19.0)
    [final] = drain(stb)
    assert isinstance(final, CodesReceived) and final.final and final.door_code == "654321"


def test_same_answer_twice_is_one_event() -> None:
    stb, hub = pair()
    stb.instruct(0.0)
    stb_to_hub(stb, hub, 0.0)
    hub_to_stb(hub, stb, 0.0)
    assert len(drain(stb)) == 1
    stb.handle_timer(0.25)
    stb_to_hub(stb, hub, 0.25)
    hub_to_stb(hub, stb, 0.25)
    assert drain(stb) == []


def test_give_up() -> None:
    stb, _ = pair()
    rid = stb.instruct(0.0)
    now = 0.0
    for _ in range(50):
        timer = stb.get_timer()
        if timer is None:
            break
        now = timer
        stb.handle_timer(now)
        stb.datagrams_to_send(now, 0)
    assert now == 20.0
    assert drain(stb) == [RequestTimedOut(rid)]


def test_revoke_round_trip() -> None:
    stb, hub = pair()
    rid = stb.revoke(0.0)
    stb_to_hub(stb, hub, 0.0)
    assert drain(hub) == [RevokeRequested(rid, STB)]
    assert hub_to_stb(hub, stb, 0.0) == 0  # nothing to say until the lock answered
    hub.reply_revoked(rid, 2, 0, 0.5)
    hub_to_stb(hub, stb, 0.5)
    assert drain(stb) == [RevokeConfirmed(rid, 2, 0)]


def test_hub_drops_bad_mac_wrong_source_replies_and_garbage() -> None:
    stb, hub = pair()
    stb.instruct(0.0)
    [(data, _)] = stb.datagrams_to_send(0.0, 0)
    hub.receive_datagram(data[:-1] + bytes([data[-1] ^ 1]), STB, 0.0)
    hub.receive_datagram(data, ("10.0.0.66", 40000), 0.0)
    hub.receive_datagram(b"\x01junk", STB, 0.0)
    other = HubClient(KEY, HUB, "10.0.0.66")
    other.instruct(0.0)
    [(forged, _)] = other.datagrams_to_send(0.0, 0)
    hub.receive_datagram(forged, ("10.0.0.66", 1), 0.0)  # right key, but not our STB
    reply = encode(Message(MsgType.REVOKED, bytes(16), 1, 0, STB[0], cleared=0, failed=0), KEY)
    hub.receive_datagram(reply, STB, 0.0)
    reasons = [e.reason for e in drain(hub) if isinstance(e, DatagramDropped)]
    assert reasons == [
        "bad mac",
        "carried IP 10.0.0.5 does not match source 10.0.0.66",
        "datagram of 5 bytes is shorter than the minimum 82",
        "carried IP 10.0.0.66 is not this home's STB",
        "REVOKED is not a request",
    ]
    assert hub.dropped == 5 and hub.datagrams_to_send(0) == []


def test_stb_ignores_replies_it_did_not_ask_for() -> None:
    stb, _ = pair()
    stb.instruct(0.0)
    stray = encode(
        Message(
            MsgType.CODES,
            bytes(16),
            1,
            0,
            STB[0],
            door_state=PartState.ISSUED,
            parking_state=PartState.ISSUED,
        ),
        KEY,
    )
    stb.receive_datagram(stray, HUB, 0.0)
    [ev] = drain(stb)
    assert isinstance(ev, DatagramDropped) and stb.busy
