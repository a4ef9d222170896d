"""Transaction timer math against RFC 3261 §17 with a fake clock (T1 = 0.5 s)."""

from __future__ import annotations

import pytest

from voip_sos.errors import LocalProtocolError
from voip_sos.sip.message import Request, Response, parse_datagram
from voip_sos.sip.transaction import ClientTransaction, ServerTransaction, TimerConfig, TxState

TIMERS = TimerConfig(t1=0.5, t2=4.0, t4=5.0)


def _request(method: str, branch: str = "z9hG4bKabc") -> Request:
    data = (
        f"{method} sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n"
        f"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    return msg


def _response(req: Request, status: int) -> Response:
    resp = Response(status=status, reason="X")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        resp.headers.add(name, req.headers.get(name) or "")
    if status > 100:
        resp.headers.set("To", "<sip:b@h>;tag=2")
    return resp


def _run_until_quiet(tx: ClientTransaction | ServerTransaction, limit: float = 100.0) -> list[float]:
    """Fire every timer; return the times a retransmission went out."""
    sent: list[float] = []
    tx.pop_outgoing()
    for _ in range(200):
        t = tx.get_timer()
        if t is None or t > limit:
            break
        tx.handle_timer(t)
        if tx.pop_outgoing():
            sent.append(t)
    return sent


def test_invite_timer_a_doubles_without_cap_and_b_times_out() -> None:
    tx = ClientTransaction(_request("INVITE"), "UDP", TIMERS, now=0.0)
    assert tx.get_timer() == 0.5
    sent = _run_until_quiet(tx)
    # A: 0.5, 1, 2, 4, 8, 16 s apart -> at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5; B at 64*T1 = 32 s.
    assert sent == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.timed_out and tx.state is TxState.TERMINATED


def test_non_invite_timer_e_caps_at_t2_and_f_times_out() -> None:
    tx = ClientTransaction(_request("OPTIONS"), "UDP", TIMERS, now=0.0)
    sent = _run_until_quiet(tx)
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tx.timed_out


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    req = _request("MESSAGE")
    tx = ClientTransaction(req, "UDP", TIMERS, now=0.0)
    tx.pop_outgoing()
    assert tx.receive_response(_response(req, 100), 0.2)
    tx.handle_timer(0.5)
    assert tx.get_timer() == 4.5


def test_invite_provisional_stops_a_and_final_error_is_acked_and_absorbed() -> None:
    req = _request("INVITE")
    tx = ClientTransaction(req, "UDP", TIMERS, now=0.0)
    tx.pop_outgoing()
    assert tx.receive_response(_response(req, 180), 0.1)
    assert tx.get_timer() == 32.0  # only B is left while proceeding
    assert tx.receive_response(_response(req, 486), 1.0)
    ((ack, transport),) = tx.pop_outgoing()
    assert ack.startswith(b"ACK sip:b@127.0.0.1 SIP/2.0") and b"branch=z9hG4bKabc" in ack
    assert b"To: <sip:b@h>;tag=2" in ack and b"CSeq: 1 ACK" in ack
    assert tx.get_timer() == 33.0  # D = 32 s on UDP
    # A retransmitted 486 is absorbed and ACKed again.
    assert not tx.receive_response(_response(req, 486), 2.0)
    assert tx.pop_outgoing() == [(ack, transport)]
    tx.handle_timer(33.0)
    assert tx.terminated and not tx.timed_out


def test_invite_2xx_goes_accepted_and_passes_retransmissions_up() -> None:
    req = _request("INVITE")
    tx = ClientTransaction(req, "UDP", TIMERS, now=0.0)
    assert tx.receive_response(_response(req, 200), 0.3)
    assert tx.state is TxState.ACCEPTED and tx.get_timer() == 0.3 + 32.0  # timer M
    assert tx.receive_response(_response(req, 200), 0.8)  # RFC 6026: TU re-ACKs
    assert not tx.receive_response(_response(req, 180), 0.9)


def test_reliable_transport_has_no_retransmissions() -> None:
    tx = ClientTransaction(_request("OPTIONS"), "TCP", TIMERS, now=0.0)
    assert tx.get_timer() == 32.0
    assert _run_until_quiet(tx) == []


def test_fall_back_to_udp_rewrites_via_and_starts_timer_a() -> None:
    req = _request("INVITE")
    req.headers.set("Via", "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKabc")
    tx = ClientTransaction(req, "TCP", TIMERS, now=0.0)
    tx.pop_outgoing()
    tx.fall_back_to_udp(0.1)
    ((data, transport),) = tx.pop_outgoing()
    assert transport == "UDP" and b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc" in data
    assert tx.get_timer() == pytest.approx(0.6)
    with pytest.raises(LocalProtocolError):
        tx.receive_response(_response(req, 200), 0.2)
        tx.fall_back_to_udp(0.3)


def test_server_invite_error_resent_by_g_until_h() -> None:
    req = _request("INVITE")
    tx = ServerTransaction(req, "UDP", ("127.0.0.1", 5060), TIMERS, now=0.0)
    tx.respond(_response(req, 100), 0.0)
    tx.respond(_response(req, 486), 0.0)
    sent = _run_until_quiet(tx)
    # G: T1 doubling up to T2 -> 0.5, 1.5, 3.5, 7.5, 11.5, ...; H at 32 s.
    assert sent[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert sent[-1] == 31.5 and tx.timed_out


def test_server_invite_ack_stops_g_and_i_absorbs() -> None:
    req = _request("INVITE")
    tx = ServerTransaction(req, "UDP", ("127.0.0.1", 5060), TIMERS, now=0.0)
    tx.respond(_response(req, 486), 0.0)
    tx.pop_outgoing()
    ack = _request("ACK")
    assert not tx.receive_request(ack, 0.2)
    assert tx.state is TxState.CONFIRMED and tx.get_timer() == 5.2  # timer I = T4
    tx.handle_timer(5.2)
    assert tx.terminated and not tx.timed_out


def test_server_2xx_resent_until_acked() -> None:
    req = _request("INVITE")
    tx = ServerTransaction(req, "UDP", ("127.0.0.1", 5060), TIMERS, now=0.0)
    tx.respond(_response(req, 200), 0.0)
    tx.pop_outgoing()
    tx.handle_timer(0.5)
    assert len(tx.pop_outgoing()) == 1 and tx.get_timer() == 1.5
    tx.ack_received(0.7)
    assert tx.get_timer() == 32.0  # only L is left
    tx.handle_timer(32.0)
    assert tx.terminated and not tx.timed_out


def test_server_non_invite_retransmission_gets_last_response_and_j() -> None:
    req = _request("OPTIONS")
    tx = ServerTransaction(req, "UDP", ("127.0.0.1", 5060), TIMERS, now=0.0)
    assert not tx.receive_request(req, 0.1)
    assert tx.pop_outgoing() == []  # trying: nothing to resend yet
    tx.respond(_response(req, 200), 0.2)
    first = tx.pop_outgoing()
    tx.receive_request(req, 0.3)
    assert tx.pop_outgoing() == first
    assert tx.get_timer() == pytest.approx(32.2)  # J = 64*T1
    with pytest.raises(LocalProtocolError):
        tx.respond(_response(req, 500), 0.4)
