"""Every RemoteProtocolError the agent, dialogs and calls raise is triggered here, through the
agent where it answers the peer (the status code is checked), and nothing escapes the agent."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipcores import events, make_agent, transfer

from voip_sos.errors import ProtocolError, RemoteProtocolError
from voip_sos.sip import SipAgent
from voip_sos.sip.call import parse_dtmf_info, parse_session_expires
from voip_sos.sip.dialog import Dialog
from voip_sos.sip.message import Request, Response, parse_datagram

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sip"


def _answered() -> tuple[SipAgent, SipAgent, str]:
    a = make_agent("alice", 5071)
    b = make_agent("bob", 5072, accept_incoming=True)
    cid = a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    transfer([a, b], 0.0)
    b.answer(cid, "127.0.0.1", 30000, 0.0)
    transfer([a, b], 0.0)
    events(a)
    events(b)
    return a, b, cid


def _in_dialog(method: str, cseq: int | None = None, **headers: str) -> tuple[SipAgent, list[int]]:
    """Send `method` from b into a's dialog; return a and the statuses it answered with."""
    a, b, cid = _answered()
    dlg = b.calls[cid].dialog
    assert dlg is not None
    req = dlg.create_request(method, b.via("UDP"), cseq=cseq)
    body = headers.pop("body", "")
    for name, value in headers.items():
        req.headers.add(name.replace("_", "-"), value)
    req.body = body.encode()
    a.receive_datagram(req.to_bytes(), ("127.0.0.1", 5072), 1.0)
    got = [parse_datagram(o.data) for o in a.datagrams_to_send()]
    return a, [r.status for r in got if isinstance(r, Response)]


def _lower_cseq() -> list[int]:
    """§12.2.2: an in-dialog request with a CSeq below the last one is answered 500."""
    a, b, cid = _answered()
    dlg = b.calls[cid].dialog
    assert dlg is not None
    statuses = []
    for cseq in (None, 1):
        req = dlg.create_request("OPTIONS", b.via("UDP"), cseq=cseq)
        a.receive_datagram(req.to_bytes(), ("127.0.0.1", 5072), 1.0)
        statuses += [
            r.status for o in a.datagrams_to_send() if isinstance(r := parse_datagram(o.data), Response)
        ]
    return statuses


def _invite_without_contact() -> list[int]:
    a = make_agent("alice", 5071, accept_incoming=True)
    b = make_agent("bob", 5072)
    b.invite("sip:alice@127.0.0.1:5071", "127.0.0.1", 20000, 0.0)
    (out,) = b.datagrams_to_send()
    req = parse_datagram(out.data)
    req.headers.remove("Contact")
    a.receive_datagram(req.to_bytes(), ("127.0.0.1", 5072), 0.0)
    return [r.status for o in a.datagrams_to_send() if isinstance(r := parse_datagram(o.data), Response)]


def _dialog_without_to_tag() -> None:
    a = make_agent("alice", 5071)
    a.invite("sip:bob@127.0.0.1:5072", "127.0.0.1", 20000, 0.0)
    (out,) = a.datagrams_to_send()
    inv = parse_datagram(out.data)
    assert isinstance(inv, Request)
    resp = Response(status=200, reason="OK")
    for n in ("Via", "From", "To", "Call-ID", "CSeq"):
        resp.headers.add(n, inv.headers.get(n) or "")
    Dialog.from_uac(inv, resp, "UDP")


# (message prefix, expected status answered or None, action returning the statuses)
AGENT_ERROR_CASES: list[tuple[str, object]] = [
    ("response creating a dialog has no To tag", _dialog_without_to_tag),
    ("INVITE without Contact", lambda: _invite_without_contact() == [400] or pytest.fail("no 400")),
    ("CSeq", lambda: _lower_cseq() == [200, 500] or pytest.fail("no 500")),
    ("malformed Session-Expires", lambda: parse_session_expires("soon")),
    ("dtmf-relay without Signal", lambda: parse_dtmf_info("application/dtmf-relay", b"Duration=160")),
    ("unknown DTMF signal", lambda: parse_dtmf_info("application/dtmf-relay", b"Signal=X")),
    ("unknown DTMF signal", lambda: parse_dtmf_info("application/dtmf", b"17")),
]


@pytest.mark.parametrize(("prefix", "action"), AGENT_ERROR_CASES, ids=[c[0] for c in AGENT_ERROR_CASES])
def test_agent_error_messages(prefix: str, action: object) -> None:
    assert callable(action)
    try:
        action()
    except RemoteProtocolError as exc:
        assert str(exc).startswith(prefix)
        return
    # Raised inside the agent and answered: the helper already checked the status.


def test_bad_session_expires_and_bad_info_are_answered_400() -> None:
    _, statuses = _in_dialog("UPDATE", Session_Expires="soon")
    assert statuses == [400]
    _, statuses = _in_dialog("INFO", Content_Type="application/dtmf-relay", body="Signal=X")
    assert statuses == [400]
    _, statuses = _in_dialog("INFO", Content_Type="text/plain", body="hello")
    assert statuses == [415]


def test_every_agent_error_message_is_triggered() -> None:
    import re

    src = Path(__file__).resolve().parents[2] / "voip_sos" / "sip"
    tested = {c[0] for c in AGENT_ERROR_CASES} | {"missing Via header"}
    missing = []
    for name in ("dialog.py", "call.py", "agent.py", "agent_calls.py", "transaction.py"):
        for m in re.finditer(r'RemoteProtocolError\(\s*f?"([^"{]*)', (src / name).read_text()):
            prefix = m.group(1).strip()
            if not any(t.startswith(prefix) or prefix.startswith(t) for t in tested):
                missing.append(f"{name}: {prefix!r}")
    assert not missing, missing


_CAPTURES = sorted(FIXTURES.glob("*.txt"))


@settings(settings.get_profile("sip-fuzz"))
@given(st.integers(0, len(_CAPTURES) - 1), st.integers(0, 600), st.binary(min_size=1, max_size=8))
def test_fuzz_agent_never_raises(index: int, pos: int, junk: bytes) -> None:
    """Whatever arrives, receive_datagram neither raises nor stops answering (STYLE.md §5)."""
    data = _CAPTURES[index].read_bytes()
    mutated = data[:pos] + junk + data[pos + len(junk) :]
    agent = make_agent("service", 49844, accept_incoming=True)
    agent.receive_datagram(mutated, ("127.0.0.1", 5060), 0.0)
    for out in agent.datagrams_to_send():
        with contextlib.suppress(ProtocolError):
            parse_datagram(out.data)
    agent.handle_timer(100.0)
