"""Two sans-IO user agents talking through `transfer()` with a fake clock: calls, CANCEL, BYE,
re-ACK, re-INVITE hold, INFO keys, session timers, auth, REGISTER, MESSAGE, large requests."""

from __future__ import annotations

import pytest
from sipcores import Wire, events, make_agent, run_timers, transfer

from voip_sos.sip import (
    CallAnswered,
    CallEnded,
    CallProgressed,
    CivicAddress,
    DtmfReceived,
    IncomingCall,
    Location,
    MediaUpdated,
    MessageReceived,
    MessageResult,
    RegistrationChanged,
    SipAgent,
)
from voip_sos.sip.call import CallState
from voip_sos.sip.digest import digest_response
from voip_sos.sip.message import Request, Response, parse_datagram
from voip_sos.sip.multipart import parse_multipart
from voip_sos.sip.pidf import parse_pidf_lo
from voip_sos.sip.sdp import build_offer


def _pair(**b_kw: object) -> tuple[SipAgent, SipAgent]:
    a = make_agent("alice", 5071)
    b = make_agent("bob", 5072, accept_incoming=True, **b_kw)
    return a, b


def _call(a: SipAgent, b: SipAgent, now: float = 0.0) -> tuple[str, IncomingCall]:
    cid = a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, now)
    transfer([a, b], now)
    (inc,) = [e for e in events(b) if isinstance(e, IncomingCall)]
    return cid, inc


def _answered(a: SipAgent, b: SipAgent, now: float = 0.0) -> str:
    cid, _ = _call(a, b, now)
    b.answer(cid, "127.0.0.1", 30000, now)
    transfer([a, b], now)
    assert [type(e) for e in events(a)] == [CallProgressed, CallAnswered]
    assert [type(e) for e in events(b)] == [CallAnswered]
    return cid


def test_call_answer_and_bye() -> None:
    a, b = _pair()
    wire = Wire()
    cid = a.invite(
        "sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0, display_name="SOS Wang", priority="emergency"
    )
    transfer([a, b], 0.0, wire)
    (inc,) = events(b)
    assert isinstance(inc, IncomingCall) and inc.display_name == "SOS Wang" and inc.offer is not None
    assert inc.offer.codec == "PCMA" and inc.offer.remote_port == 20000
    invite = wire.log[0][3]
    assert isinstance(invite, Request) and invite.headers.get("Priority") == "emergency"
    (ringing,) = events(a)
    assert isinstance(ringing, CallProgressed) and ringing.status == 180 and ringing.early_media is None
    b.answer(cid, "127.0.0.1", 30000, 0.1)
    transfer([a, b], 0.1, wire)
    (ans,) = events(a)
    assert isinstance(ans, CallAnswered) and ans.media.remote_port == 30000 and ans.media.codec == "PCMA"
    assert isinstance(events(b)[0], CallAnswered)
    assert wire.methods() == ["INVITE", "100", "180", "200", "ACK"]
    a.bye(cid, 5.0)
    transfer([a, b], 5.0, wire)
    (end_a,) = events(a)
    (end_b,) = events(b)
    assert isinstance(end_a, CallEnded) and end_a.by == "local" and end_a.answered and end_a.status == 200
    assert isinstance(end_b, CallEnded) and end_b.by == "remote"
    assert wire.methods()[-2:] == ["BYE", "200"]


def test_lost_ack_makes_the_2xx_resend_and_each_gets_an_ack() -> None:
    a, b = _pair()
    cid, _ = _call(a, b)
    b.answer(cid, "127.0.0.1", 30000, 0.0)
    wire = Wire()
    acks: list[bytes] = []

    def drop_first_acks(msg: object, out: object) -> bool:
        if isinstance(msg, Request) and msg.method == "ACK":
            acks.append(msg.to_bytes())
            return len(acks) <= 2
        return False

    transfer([a, b], 0.0, wire, drop_first_acks)
    run_timers([a, b], 0.0, 3.0, wire, drop_first_acks)
    oks = [t for t, src, _, m, _ in wire.log if isinstance(m, Response) and m.status == 200 and src == 5072]
    assert oks == [0.0, 0.5, 1.5]  # 2xx resent at T1, 2·T1 until ACKed (§13.3.1.4)
    assert len(acks) == 3 and acks[0] == acks[1] == acks[2]  # re-ACK: the very same request
    assert [type(e) for e in events(b)] == [CallAnswered]
    assert sum(isinstance(e, CallAnswered) for e in events(a)) == 1


def test_first_invite_lost_is_retransmitted_at_t1() -> None:
    a, b = _pair()
    wire = Wire()
    seen: list[float] = []

    def drop_first(msg: object, out: object) -> bool:
        if isinstance(msg, Request) and msg.method == "INVITE":
            seen.append(0.0)
            return len(seen) == 1
        return False

    a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    transfer([a, b], 0.0, wire, drop_first)
    run_timers([a, b], 0.0, 1.0, wire, drop_first)
    times = [t for t, _, _, m, _ in wire.log if isinstance(m, Request) and m.method == "INVITE"]
    assert times == [0.0, 0.5]
    assert any(isinstance(e, IncomingCall) for e in events(b))


def test_cancel_before_answer() -> None:
    a, b = _pair()
    cid, _ = _call(a, b)
    a.cancel(cid, 1.0)
    wire = Wire()
    transfer([a, b], 1.0, wire)
    assert wire.methods() == ["CANCEL", "200", "487", "ACK"]
    end_a = [e for e in events(a) if isinstance(e, CallEnded)]
    end_b = [e for e in events(b) if isinstance(e, CallEnded)]
    assert end_a[0].by == "local" and end_a[0].status == 487 and not end_a[0].answered
    assert end_b[0].by == "remote" and end_b[0].status == 487


def test_cancel_waits_for_a_provisional() -> None:
    a, b = _pair()
    cid = a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    a.datagrams_to_send()  # INVITE lost
    a.cancel(cid, 0.1)
    assert a.datagrams_to_send() == []  # §9.1: no CANCEL before a provisional response
    wire = Wire()
    run_timers([a, b], 0.1, 1.0, wire)
    assert wire.methods()[:6] == ["INVITE", "100", "180", "CANCEL", "200", "487"]


def test_no_handler_refuses_with_486() -> None:
    a = make_agent("alice", 5071)
    b = make_agent("bob", 5072)
    cid = a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    transfer([a, b], 0.0)
    (end,) = events(a)
    assert isinstance(end, CallEnded) and end.status == 486 and end.by == "remote" and end.call_id == cid


def test_reject_incoming() -> None:
    a, b = _pair()
    cid, _ = _call(a, b)
    b.reject(cid, 603, 0.2)
    transfer([a, b], 0.2)
    ends = [e for e in events(a) if isinstance(e, CallEnded)]
    assert ends[0].status == 603


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(403, "Forbidden"), (486, "Busy Here"), (480, "Temporarily Unavailable"), (603, "Decline"),
     (499, "Request Failure"), (599, "Server Failure")],
)  # fmt: skip
def test_a_refusal_carries_its_reason_phrase(status: int, phrase: str) -> None:
    # Peers show the phrase to their users: "403 Unknown" told a caller nothing.
    a, b = _pair()
    wire = Wire()
    cid, _ = _call(a, b)
    b.reject(cid, status, 0.2)
    transfer([a, b], 0.2, wire)
    final = [m for _, _, _, m, _ in wire.log if isinstance(m, Response) and m.status == status]
    assert final and final[0].reason == phrase
    assert f"SIP/2.0 {status} {phrase}\r\n".encode() in final[0].to_bytes()


def test_far_end_hold_via_reinvite_and_resume_via_update() -> None:
    a, b = _pair()
    cid = _answered(a, b)
    call_b = b.calls[cid]
    assert call_b.dialog is not None
    hold = build_offer("127.0.0.1", 30000, ("PCMA",), 1, 2, direction="sendonly").to_bytes()
    req = call_b.dialog.create_request("INVITE", b.via("UDP"))
    req.headers.add("Contact", b.contact("UDP"))
    req.headers.add("Content-Type", "application/sdp")
    req.body = hold
    wire = Wire()
    a.receive_datagram(req.to_bytes(), ("127.0.0.1", 5072), 2.0)
    (upd,) = events(a)
    assert isinstance(upd, MediaUpdated) and upd.media.on_hold and upd.media.direction == "recvonly"
    (out,) = a.datagrams_to_send()
    resp = parse_datagram(out.data)
    assert isinstance(resp, Response) and resp.status == 200 and b"a=recvonly" in resp.body
    resume = build_offer("127.0.0.1", 30002, ("PCMA",), 1, 3).to_bytes()
    upd_req = call_b.dialog.create_request("UPDATE", b.via("UDP"))
    upd_req.headers.add("Content-Type", "application/sdp")
    upd_req.body = resume
    a.receive_datagram(upd_req.to_bytes(), ("127.0.0.1", 5072), 3.0)
    (upd2,) = events(a)
    assert isinstance(upd2, MediaUpdated) and not upd2.media.on_hold and upd2.media.remote_port == 30002
    del wire


def test_info_dtmf_relay_and_dtmf() -> None:
    a, b = _pair()
    cid = _answered(a, b)
    dlg = b.calls[cid].dialog
    assert dlg is not None
    for ctype, body in (
        ("application/dtmf-relay", b"Signal=1\r\nDuration=160\r\n"),
        ("application/dtmf", b"#"),
    ):
        info = dlg.create_request("INFO", b.via("UDP"))
        info.headers.add("Content-Type", ctype)
        info.body = body
        a.receive_datagram(info.to_bytes(), ("127.0.0.1", 5072), 4.0)
    keys = [e for e in events(a) if isinstance(e, DtmfReceived)]
    assert [(k.key, k.duration_ms) for k in keys] == [("1", 160), ("#", None)]
    statuses = [parse_datagram(o.data) for o in a.datagrams_to_send()]
    assert [getattr(s, "status", None) for s in statuses] == [200, 200]


def test_unknown_dialog_gets_481_and_unknown_method_501() -> None:
    a, b = _pair()
    cid = _answered(a, b)
    dlg = b.calls[cid].dialog
    assert dlg is not None
    bye = dlg.create_request("BYE", b.via("UDP"))
    bye.headers.set("Call-ID", "nope")
    a.receive_datagram(bye.to_bytes(), ("127.0.0.1", 5072), 1.0)
    sub = dlg.create_request("SUBSCRIBE", b.via("UDP"))
    sub.headers.set("To", "<sip:alice@127.0.0.1>")
    a.receive_datagram(sub.to_bytes(), ("127.0.0.1", 5072), 1.0)
    req_ext = dlg.create_request("OPTIONS", b.via("UDP"))
    req_ext.headers.add("Require", "100rel, foo")
    a.receive_datagram(req_ext.to_bytes(), ("127.0.0.1", 5072), 1.0)
    got = [parse_datagram(o.data) for o in a.datagrams_to_send()]
    assert [getattr(r, "status", None) for r in got] == [481, 501, 420]
    assert got[2].headers.get("Unsupported") == "100rel, foo"


def test_malformed_request_answered_400_and_bad_version_505() -> None:
    a = make_agent("alice", 5071)
    bad = (
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKq\r\n"
        b"From: <sip:x@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: q\r\nCSeq: one OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    a.receive_datagram(bad, ("127.0.0.1", 5090), 0.0)
    a.receive_datagram(bad.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), ("127.0.0.1", 5090), 0.0)
    a.receive_datagram(bad.replace(b"sip:a@", b"http://a@"), ("127.0.0.1", 5090), 0.0)
    out = a.datagrams_to_send()
    assert [o.data.split(b"\r\n")[0] for o in out] == [
        b"SIP/2.0 400 Bad Request",
        b"SIP/2.0 505 Version Not Supported",
        b"SIP/2.0 416 Unsupported URI Scheme",
    ]
    assert all(o.addr == ("127.0.0.1", 5090) for o in out)
    assert a.dropped == 3


def test_options_answered_200_with_allow() -> None:
    a, b = _pair()
    req = b.base_request(
        "OPTIONS", "sip:alice@127.0.0.1:5071", "<sip:alice@127.0.0.1>", "<sip:bob@h>;tag=9", "o1", 1
    )
    req.headers.set("Via", b.via("UDP"))
    a.receive_datagram(req.to_bytes(), ("127.0.0.1", 5072), 0.0)
    (out,) = a.datagrams_to_send()
    resp = parse_datagram(out.data)
    assert isinstance(resp, Response) and resp.status == 200 and "INVITE" in (resp.headers.get("Allow") or "")
    assert "rport=5072" in (resp.headers.get("Via") or "")


def test_session_timer_refreshed_by_us_when_pbx_asks() -> None:
    a, b = _pair()
    cid = a.invite(
        "sip:bob@127.0.0.1:5072",
        "127.0.0.1",
        20000,
        0.0,
        extra_headers=(("Session-Expires", "90;refresher=uac"),),
    )
    transfer([a, b], 0.0)
    b.answer(cid, "127.0.0.1", 30000, 0.0)
    wire = Wire()
    transfer([a, b], 0.0, wire)
    assert "90;refresher=uac" in (wire.log[0][3].headers.get("Session-Expires") or "")
    assert a.calls[cid].refresh_at == 45.0
    assert b.calls[cid].expire_at == 60.0  # 90 - min(32, 30)
    run_timers([a, b], 0.0, 100.0, wire)
    refreshes = [t for t, src, _, m, _ in wire.log if isinstance(m, Request) and m.method == "UPDATE"]
    assert refreshes == [45.0, 90.0]  # every interval/2, and the far end never expired the call
    assert a.calls[cid].state is CallState.CONFIRMED and b.calls[cid].state is CallState.CONFIRMED


def test_session_expiry_without_refresh_ends_call() -> None:
    a, b = _pair()
    cid = a.invite(
        "sip:bob@127.0.0.1:5072",
        "127.0.0.1",
        20000,
        0.0,
        extra_headers=(("Session-Expires", "90;refresher=uac"),),
    )
    transfer([a, b], 0.0)
    b.answer(cid, "127.0.0.1", 30000, 0.0)
    transfer([a, b], 0.0)
    events(b)

    def drop_updates(msg: object, out: object) -> bool:
        return isinstance(msg, Request) and msg.method == "UPDATE"

    run_timers([a, b], 0.0, 70.0, None, drop_updates)
    ends = [e for e in events(b) if isinstance(e, CallEnded)]
    assert ends and ends[0].by == "local"


def test_dialog_export_restore_bye_after_restart() -> None:
    a, b = _pair()
    cid = _answered(a, b)
    state = a.export_dialog(cid)
    import json

    restarted = make_agent("alice", 5071)
    restarted.restore_dialog(json.loads(json.dumps(state)), 100.0)
    restarted.bye(cid, 100.0)
    wire = Wire()
    transfer([restarted, b], 100.0, wire)
    assert wire.methods() == ["BYE", "200"]
    assert isinstance(events(b)[0], CallEnded)
    assert isinstance(events(restarted)[0], CallEnded)


def _challenge(req_bytes: bytes, status: int, www: str) -> bytes:
    req = parse_datagram(req_bytes)
    resp = Response(status=status, reason="Unauthorized")
    for n in ("Via", "From", "To", "Call-ID", "CSeq"):
        resp.headers.add(n, req.headers.get(n) or "")
    resp.headers.add("Proxy-Authenticate" if status == 407 else "WWW-Authenticate", www)
    return resp.to_bytes()


def _ok(req_bytes: bytes, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    req = parse_datagram(req_bytes)
    resp = Response(status=200, reason="OK")
    for n in ("Via", "From", "To", "Call-ID", "CSeq", "Contact"):
        if req.headers.get(n) is not None:
            resp.headers.add(n, req.headers.get(n) or "")
    for n, v in extra:
        resp.headers.add(n, v)
    return resp.to_bytes()


def _registrar_agent(**kw: object) -> SipAgent:
    return make_agent("alice", 5071, registrar=("127.0.0.1", 5060), password="s3cret", **kw)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_register_401_then_200_and_refresh(algorithm: str) -> None:
    a = _registrar_agent()
    a.register(0.0)
    (first,) = a.datagrams_to_send()
    assert first.addr == ("127.0.0.1", 5060)
    www = f'Digest realm="pbx", nonce="n1", algorithm={algorithm}, qop="auth"'
    a.receive_datagram(_challenge(first.data, 401, www), ("127.0.0.1", 5060), 0.1)
    (second,) = a.datagrams_to_send()
    req = parse_datagram(second.data)
    auth = req.headers.get("Authorization") or ""
    fields = dict(p.split("=", 1) for p in auth.removeprefix("Digest ").replace('"', "").split(", "))
    expected = digest_response(
        algorithm=algorithm, username="alice", realm="pbx", password="s3cret", method="REGISTER",
        uri="sip:127.0.0.1", nonce="n1", qop="auth", nc=1, cnonce=fields["cnonce"],
    )  # fmt: skip
    assert fields["response"] == expected and (req.headers.get("CSeq") or "").startswith("2 ")
    assert req.call_id == parse_datagram(first.data).call_id
    a.receive_datagram(_ok(second.data), ("127.0.0.1", 5060), 0.2)
    (ev,) = events(a)
    assert isinstance(ev, RegistrationChanged) and ev.state == "registered" and ev.expires_s == 600
    assert a.registration.next_attempt_at == pytest.approx(0.2 + 570)  # refresh 30 s early


def test_register_wrong_password_fails_without_loop_and_backs_off() -> None:
    a = _registrar_agent()
    a.register(0.0)
    for nonce in ("n1", "n2"):
        (out,) = a.datagrams_to_send()
        a.receive_datagram(
            _challenge(out.data, 401, f'Digest realm="pbx", nonce="{nonce}"'), ("127.0.0.1", 5060), 0.1
        )
    assert a.datagrams_to_send() == []  # no third attempt
    (ev,) = events(a)
    assert isinstance(ev, RegistrationChanged) and ev.state == "failed" and ev.status == 401
    assert ev.retry_at == pytest.approx(2.1)
    a.handle_timer(2.1)
    assert len(a.datagrams_to_send()) == 1  # backoff retry: 2 s, then 4, 8 …


def test_register_stale_nonce_is_answered_again() -> None:
    a = _registrar_agent()
    a.register(0.0)
    (out,) = a.datagrams_to_send()
    a.receive_datagram(_challenge(out.data, 401, 'Digest realm="pbx", nonce="n1"'), ("127.0.0.1", 5060), 0.1)
    (out,) = a.datagrams_to_send()
    a.receive_datagram(
        _challenge(out.data, 401, 'Digest realm="pbx", nonce="n2", stale=true'), ("127.0.0.1", 5060), 0.2
    )
    (out,) = a.datagrams_to_send()
    assert 'nonce="n2"' in (parse_datagram(out.data).headers.get("Authorization") or "")


def test_register_423_retries_with_min_expires_and_unregister() -> None:
    a = _registrar_agent(expires_s=60)
    a.register(0.0)
    (out,) = a.datagrams_to_send()
    req = parse_datagram(out.data)
    resp = Response(status=423, reason="Interval Too Brief")
    for n in ("Via", "From", "To", "Call-ID", "CSeq"):
        resp.headers.add(n, req.headers.get(n) or "")
    resp.headers.add("Min-Expires", "300")
    a.receive_datagram(resp.to_bytes(), ("127.0.0.1", 5060), 0.1)
    (out,) = a.datagrams_to_send()
    assert parse_datagram(out.data).headers.get("Expires") == "300"
    a.receive_datagram(_ok(out.data), ("127.0.0.1", 5060), 0.2)
    assert events(a)[0].expires_s == 300  # type: ignore[union-attr]
    a.unregister(1.0)
    (out,) = a.datagrams_to_send()
    assert parse_datagram(out.data).headers.get("Expires") == "0"
    a.receive_datagram(_ok(out.data), ("127.0.0.1", 5060), 1.1)
    (ev,) = events(a)
    assert isinstance(ev, RegistrationChanged) and ev.state == "unregistered"
    assert a.registration.next_attempt_at is None
    run_timers([a], 1.1, 10.0)  # timers K (T4) of the finished transactions run out
    assert a.get_timer() is None


def test_register_timeout_is_a_failure() -> None:
    a = _registrar_agent()
    a.register(0.0)
    run_timers([a], 0.0, 32.0)
    (ev,) = events(a)
    assert isinstance(ev, RegistrationChanged) and ev.state == "failed" and ev.status is None


def test_invite_407_then_200_and_message_401() -> None:
    a, b = _pair()
    cid = a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    (out,) = a.datagrams_to_send()
    a.receive_datagram(
        _challenge(out.data, 407, 'Digest realm="p", nonce="x", qop="auth"'), ("127.0.0.1", 5072), 0.1
    )
    ack, retry = a.datagrams_to_send()
    assert ack.data.startswith(b"ACK ")
    inv = parse_datagram(retry.data)
    assert inv.headers.get("Proxy-Authorization") and (inv.headers.get("CSeq") or "").startswith("2 INVITE")
    b.receive_datagram(retry.data, ("127.0.0.1", 5071), 0.2)
    transfer([a, b], 0.2)
    b.answer(cid, "127.0.0.1", 30000, 0.3)
    transfer([a, b], 0.3)
    assert any(isinstance(e, CallAnswered) for e in events(a))
    h = a.message("sip:bob@127.0.0.1:5072", "SOS: 张三, 5F", 1.0)
    (out,) = a.datagrams_to_send()
    a.receive_datagram(_challenge(out.data, 401, 'Digest realm="p", nonce="y"'), ("127.0.0.1", 5072), 1.1)
    (out,) = a.datagrams_to_send()
    b.receive_datagram(out.data, ("127.0.0.1", 5071), 1.2)
    transfer([a, b], 1.2)
    (res,) = [e for e in events(a) if isinstance(e, MessageResult)]
    assert res.handle == h and res.status == 200
    (got,) = [e for e in events(b) if isinstance(e, MessageReceived)]
    assert got.body.decode() == "SOS: 张三, 5F" and got.content_type.startswith("text/plain")


def test_early_media_183_is_not_an_answer() -> None:
    a, _ = _pair()
    cid = a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    (out,) = a.datagrams_to_send()
    inv = parse_datagram(out.data)
    resp = Response(status=183, reason="Session Progress")
    for n in ("Via", "From", "Call-ID", "CSeq"):
        resp.headers.add(n, inv.headers.get(n) or "")
    resp.headers.add("To", (inv.headers.get("To") or "") + ";tag=t9")
    resp.headers.add("Contact", "<sip:pbx@127.0.0.1:5072>")
    resp.headers.add("Content-Type", "application/sdp")
    resp.body = build_offer("127.0.0.1", 40000, ("PCMU",), 5, 1).to_bytes()
    a.receive_datagram(resp.to_bytes(), ("127.0.0.1", 5072), 0.5)
    (ev,) = events(a)
    assert isinstance(ev, CallProgressed) and ev.status == 183
    assert (
        ev.early_media is not None and ev.early_media.remote_port == 40000 and ev.early_media.codec == "PCMU"
    )
    assert a.calls[cid].state is CallState.EARLY and not a.calls[cid].answered


def test_large_invite_with_location_tries_tcp_then_udp() -> None:
    a, b = _pair()
    civic = CivicAddress(
        country="CN", A1="Beijing", A3="Haidian", RD="Zhongguancun St", HNO="27", FLR="5", NAM="x" * 600
    )
    cid = a.invite(
        "sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0,
        location=Location("pres:uid7@127.0.0.1", civic, "2026-11-24T19:00:00Z"),
    )  # fmt: skip
    (out,) = a.datagrams_to_send()
    assert len(out.data) > 1300 and out.transport == "TCP" and out.fallback_udp and out.tx_key
    assert b"Via: SIP/2.0/TCP " in out.data
    a.transport_failed(out.tx_key, 0.01)
    (udp,) = a.datagrams_to_send()
    assert udp.transport == "UDP" and b"Via: SIP/2.0/UDP " in udp.data and not udp.fallback_udp
    # Retransmissions after the fallback go over UDP at T1.
    assert a.get_timer() == pytest.approx(0.51)
    b.receive_datagram(udp.data, ("127.0.0.1", 5071), 0.02)
    transfer([a, b], 0.02)
    (inc,) = [e for e in events(b) if isinstance(e, IncomingCall)]
    assert inc.call_id == cid and inc.offer is not None
    inv = parse_datagram(udp.data)
    assert (inv.headers.get("Geolocation") or "").startswith("<cid:")
    parts = parse_multipart(inv.headers.get("Content-Type") or "", inv.body)
    assert parse_pidf_lo(parts[1].body)[1] == civic


def test_transport_error_on_small_request_ends_call_503() -> None:
    a, _ = _pair()
    a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    (out,) = a.datagrams_to_send()
    assert out.tx_key is not None and not out.fallback_udp
    a.transport_failed(out.tx_key, 0.1)
    (ev,) = events(a)
    assert isinstance(ev, CallEnded) and ev.status == 503 and ev.by == "error"


def test_invite_timeout_ends_call_408() -> None:
    a = make_agent("alice", 5071)
    a.invite("sip:bob@127.0.0.1:5099", "127.0.0.1", 20000, 0.0)
    run_timers([a], 0.0, 40.0)
    (ev,) = events(a)
    assert isinstance(ev, CallEnded) and ev.by == "timeout" and ev.status == 408


def test_422_retried_with_min_se_once() -> None:
    a = make_agent("alice", 5071)
    cid = a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    for attempt in range(2):
        (*_, out) = a.datagrams_to_send()
        inv = parse_datagram(out.data)
        if attempt == 1:
            assert inv.headers.get("Session-Expires") == "1800" and inv.headers.get("Min-SE") == "1800"
            assert (inv.headers.get("CSeq") or "").startswith("2 INVITE")
        resp = Response(status=422, reason="Session Interval Too Small")
        for n in ("Via", "From", "To", "Call-ID", "CSeq"):
            resp.headers.add(n, inv.headers.get(n) or "")
        resp.headers.add("Min-SE", "1800")
        a.receive_datagram(resp.to_bytes(), ("127.0.0.1", 5072), 0.1 * (attempt + 1))
    (ev,) = events(a)
    assert isinstance(ev, CallEnded) and ev.status == 422 and ev.call_id == cid  # a second 422 ends it


def test_late_2xx_after_bye_is_still_acked_then_call_forgotten() -> None:
    a, b = _pair()
    wire = Wire()
    cid, _ = _call(a, b)
    b.answer(cid, "127.0.0.1", 30000, 0.0)
    transfer([a, b], 0.0, wire)
    ok = next(out for _, src, _, m, out in wire.log if isinstance(m, Response) and m.status == 200)
    events(a)
    a.bye(cid, 1.0)
    transfer([a, b], 1.0)
    assert isinstance(events(a)[0], CallEnded)
    a.receive_datagram(ok.data, ("127.0.0.1", 5072), 2.0)  # the 200 OK to the INVITE, once more
    (ack,) = a.datagrams_to_send()
    assert ack.data.startswith(b"ACK ") and b"CSeq: 1 ACK" in ack.data
    run_timers([a], 2.0, 40.0)
    assert cid not in a.calls


def test_cancel_after_auth_retry_targets_the_retried_invite() -> None:
    a, b = _pair()
    cid = a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    (out,) = a.datagrams_to_send()
    a.receive_datagram(_challenge(out.data, 407, 'Digest realm="p", nonce="x"'), ("127.0.0.1", 5072), 0.1)
    _, retry = a.datagrams_to_send()
    b.receive_datagram(retry.data, ("127.0.0.1", 5071), 0.2)
    transfer([a, b], 0.2)
    a.cancel(cid, 0.5)
    wire = Wire()
    transfer([a, b], 0.5, wire)
    cancel = wire.log[0][3]
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.headers.get("Via") == parse_datagram(retry.data).headers.get("Via")
    assert (cancel.headers.get("CSeq") or "") == "2 CANCEL"
    assert wire.methods() == ["CANCEL", "200", "487", "ACK"]


def test_cancel_of_a_large_invite_follows_its_udp_fallback() -> None:
    a, b = _pair()
    civic = CivicAddress(country="CN", NAM="x" * 900)
    loc = Location("pres:u@127.0.0.1", civic, "2026-11-24T19:00:00Z")
    cid = a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0, location=loc)
    (tcp,) = a.datagrams_to_send()
    assert tcp.tx_key is not None
    a.transport_failed(tcp.tx_key, 0.01)
    transfer([a, b], 0.01)
    a.cancel(cid, 0.5)
    wire = Wire()
    transfer([a, b], 0.5, wire)
    assert wire.methods() == ["CANCEL", "200", "487", "ACK"]
    assert all(out.transport == "UDP" for *_, out in wire.log)
    assert b"Via: SIP/2.0/UDP " in wire.log[0][4].data


def test_session_refresh_by_reinvite_when_peer_has_no_update() -> None:
    a, b = _pair()
    cid = a.invite(
        "sip:bob@127.0.0.1:5072",
        "127.0.0.1",
        20000,
        0.0,
        extra_headers=(("Session-Expires", "90;refresher=uac"),),
    )
    transfer([a, b], 0.0)
    b.answer(cid, "127.0.0.1", 30000, 0.0)
    transfer([a, b], 0.0)
    dlg = a.calls[cid].dialog
    assert dlg is not None
    dlg.peer_allow = ("INVITE", "ACK", "BYE", "CANCEL")
    wire = Wire()
    run_timers([a, b], 0.0, 50.0, wire)
    assert wire.methods() == ["INVITE", "200", "ACK"]
    reinvite = wire.log[0][3]
    assert isinstance(reinvite, Request) and reinvite.body == a.calls[cid].local_sdp
    assert a.calls[cid].refresh_at == 90.0 and b.calls[cid].state is CallState.CONFIRMED
    assert not [e for e in events(b) if isinstance(e, MediaUpdated)]  # same SDP: nothing changed


def test_offerless_reinvite_gets_our_offer_and_the_answer_in_the_ack_moves_media() -> None:
    a, b = _pair()
    cid = _answered(a, b)
    dlg = b.calls[cid].dialog
    assert dlg is not None
    reinvite = dlg.create_request("INVITE", b.via("UDP"))
    reinvite.headers.add("Contact", b.contact("UDP"))
    a.receive_datagram(reinvite.to_bytes(), ("127.0.0.1", 5072), 5.0)
    (out,) = a.datagrams_to_send()
    ok = parse_datagram(out.data)
    assert isinstance(ok, Response) and ok.status == 200 and b"m=audio 20000 RTP/AVP 8 0 101" in ok.body
    ack = dlg.create_request("ACK", b.via("UDP"), cseq=dlg.local_seq)
    ack.headers.add("Content-Type", "application/sdp")
    ack.body = build_offer("127.0.0.1", 30008, ("PCMU",), 9, 2, direction="sendonly").to_bytes()
    a.receive_datagram(ack.to_bytes(), ("127.0.0.1", 5072), 5.1)
    (upd,) = events(a)
    assert isinstance(upd, MediaUpdated) and upd.media.remote_port == 30008 and upd.media.on_hold
    wire = Wire()
    run_timers([a], 5.1, 10.0, wire)
    assert wire.log == []  # the ACK stopped our 200's retransmissions


def test_reinvite_glare_is_answered_491() -> None:
    a, b = _pair()
    cid = a.invite(
        "sip:bob@127.0.0.1:5072",
        "127.0.0.1",
        20000,
        0.0,
        extra_headers=(("Session-Expires", "90;refresher=uac"),),
    )
    transfer([a, b], 0.0)
    b.answer(cid, "127.0.0.1", 30000, 0.0)
    transfer([a, b], 0.0)
    dlg_a, dlg_b = a.calls[cid].dialog, b.calls[cid].dialog
    assert dlg_a is not None and dlg_b is not None
    dlg_a.peer_allow = ("INVITE", "ACK", "BYE")
    a.handle_timer(45.0)  # our refresh re-INVITE goes out (and is lost)
    a.datagrams_to_send()
    theirs = dlg_b.create_request("INVITE", b.via("UDP"))
    theirs.headers.add("Contact", b.contact("UDP"))
    a.receive_datagram(theirs.to_bytes(), ("127.0.0.1", 5072), 45.1)
    (out,) = a.datagrams_to_send()
    assert out.data.startswith(b"SIP/2.0 491 ")
