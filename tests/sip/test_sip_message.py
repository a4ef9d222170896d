"""SIP message parsing: real captures round-trip, UDP and TCP framing, every parser error message."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voip_sos.errors import ProtocolError, RemoteProtocolError
from voip_sos.sip.headers import CSeq, NameAddr, SipUri, Via
from voip_sos.sip.message import (
    Headers,
    Message,
    Request,
    Response,
    StreamParser,
    canonical_name,
    parse_datagram,
    split_commas,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sip"
CAPTURES = sorted(FIXTURES.glob("*.txt"))


def _load(path: Path) -> bytes:
    return path.read_bytes()


def test_fixtures_exist() -> None:
    assert len(CAPTURES) >= 5


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_capture_round_trips(path: Path) -> None:
    data = _load(path)
    msg = parse_datagram(data)
    again = parse_datagram(msg.to_bytes())
    assert again == msg
    assert again.to_bytes() == msg.to_bytes()
    # Same bytes whenever the capture used canonical spacing around Content-Length.
    if b"Content-Length:   " not in data and b"\n " not in data:
        assert msg.to_bytes() == data


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_capture_stream_whole_and_byte_by_byte(path: Path) -> None:
    data = parse_datagram(_load(path)).to_bytes()
    whole = StreamParser()
    whole.feed(data + data)
    first, second = whole.next_message(), whole.next_message()
    assert first is not None and first == second == parse_datagram(data)
    assert whole.next_message() is None

    split = StreamParser()
    got = []
    for i in range(len(data)):
        split.feed(data[i : i + 1])
        m = split.next_message()
        if m is not None:
            got.append(m)
    assert got == [parse_datagram(data)]
    assert split.buffered == 0


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_capture_with_trailing_junk(path: Path) -> None:
    data = parse_datagram(_load(path)).to_bytes()
    # §18.3: bytes past Content-Length in a datagram are discarded.
    assert parse_datagram(data + b"\x00junk\r\n") == parse_datagram(data)
    # On a stream the junk is the start of the next message: it must not corrupt this one.
    sp = StreamParser()
    sp.feed(data + b"GARBAGE")
    assert sp.next_message() == parse_datagram(data)
    assert sp.next_message() is None


def test_compact_names_and_folding() -> None:
    data = (
        b"INVITE sip:120@example.net SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n"
        b"Via: SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK2, SIP/2.0/UDP 10.0.0.3:5070;branch=z9hG4bK3\r\n"
        b'f: "Alice, \\"A\\"" <sip:alice@example.net>;tag=1\r\n'
        b"t: <sip:120@example.net>\r\n"
        b"i: abc@host\r\n"
        b"CSEQ: 7 INVITE\r\n"
        b"Subject: a long\r\n"
        b"  folded\r\n"
        b"\tsubject\r\n"
        b"m: <sip:alice@10.0.0.1;transport=tcp>;expires=60, sip:bob@10.0.0.9\r\n"
        b"l: 0\r\n\r\n"
    )
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    assert msg.call_id == "abc@host"
    assert msg.headers.get("subject") == "a long folded subject"
    vias = [Via.parse(v) for v in msg.headers.get_all("Via")]
    assert [v.branch for v in vias] == ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]
    assert vias[0].params == {"branch": "z9hG4bK1", "rport": None}
    assert vias[2].port == 5070 and vias[1].transport == "TCP"
    frm = NameAddr.parse(msg.headers.get("From") or "")
    assert frm.display == 'Alice, "A"' and frm.tag == "1" and frm.uri.user == "alice"
    contacts = [NameAddr.parse(c, "Contact") for c in msg.headers.get_all("Contact")]
    assert [c.uri.user for c in contacts] == ["alice", "bob"]
    assert contacts[0].uri.transport == "tcp" and contacts[0].params == {"expires": "60"}
    assert CSeq.parse(msg.headers.get("cseq") or "") == CSeq(7, "INVITE")
    # NameAddr renders back to something that parses the same.
    assert NameAddr.parse(str(frm)) == frm


def test_auth_headers_are_not_split_on_commas() -> None:
    h = Headers([("WWW-Authenticate", 'Digest realm="a", nonce="b"'), ("Allow", "INVITE, ACK,BYE")])
    assert h.get_all("www-authenticate") == ['Digest realm="a", nonce="b"']
    assert h.get_all("Allow") == ["INVITE", "ACK", "BYE"]


def test_escaped_uri_user_round_trips() -> None:
    uri = SipUri.parse("sip:%61lice%20x@example.net:5070;transport=tcp;lr?Subject=hi")
    assert uri.user == "alice x" and uri.port == 5070 and uri.params == {"transport": "tcp", "lr": None}
    assert SipUri.parse(str(uri)) == uri
    assert SipUri.parse("tel:+8610120;phone-context=example").user == "+8610120"
    assert SipUri.parse("sip:[::1]:5060").host == "[::1]"


def test_canonical_names() -> None:
    assert canonical_name("i") == "Call-ID"
    assert canonical_name("cseq") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("x") == "Session-Expires"
    assert split_commas('"a,b" <sip:x>, <sip:y;p=1,2>') == ['"a,b" <sip:x>', "<sip:y;p=1,2>"]


def test_serializer_sets_content_length() -> None:
    req = Request(method="MESSAGE", uri="sip:1@x", body="héllo".encode())
    req.headers.add("Content-Length", "99")
    assert b"Content-Length: 6\r\n" in req.to_bytes()
    resp = Response(status=200, reason="OK")
    assert resp.to_bytes().endswith(b"Content-Length: 0\r\n\r\n")


def test_udp_without_content_length_takes_rest_of_datagram() -> None:
    data = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\nbody"
    )
    msg = parse_datagram(data)
    assert isinstance(msg, Response) and msg.status == 200 and msg.body == b"body"


def test_crlf_keepalives_on_stream_are_skipped() -> None:
    data = parse_datagram(_load(CAPTURES[0])).to_bytes()
    sp = StreamParser()
    sp.feed(b"\r\n\r\n" + data + b"\r\n\r\n")
    assert sp.next_message() is not None
    assert sp.next_message() is None
    assert sp.keepalives == 4


_BASE = (
    "Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\n"
    "Call-ID: c\r\nCSeq: 1 OPTIONS\r\n"
)


def _req(start: str = "OPTIONS sip:b@h SIP/2.0", extra: str = "", drop: str = "", body: str = "") -> bytes:
    base = "".join(
        line + "\r\n" for line in _BASE.split("\r\n") if line and not line.startswith(drop or "\0")
    )
    return f"{start}\r\n{base}{extra}Content-Length: {len(body)}\r\n\r\n{body}".encode()


def _stream(data: bytes) -> None:
    sp = StreamParser()
    sp.feed(data)
    sp.next_message()


def _poisoned() -> None:
    sp = StreamParser()
    sp.feed(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        sp.next_message()
    sp.next_message()


# (message prefix, status hint, action): together these must trigger every RemoteProtocolError
# message that the SIP parsers can raise (checked by test_every_error_message_is_triggered).
ERROR_CASES: list[tuple[str, int, object]] = [
    ("missing empty line after headers", 400, lambda: parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x")),
    ("unsupported SIP version", 505, lambda: parse_datagram(_req("OPTIONS sip:b@h SIP/3.0"))),
    ("unsupported SIP version", 505, lambda: parse_datagram(b"SIP/1.0 200 OK\r\n\r\n")),
    ("malformed status line", 400, lambda: parse_datagram(b"SIP/2.0 2000 OK\r\n\r\n")),
    ("malformed request line", 400, lambda: parse_datagram(_req("OPTIONS sip:b@h"))),
    ("malformed request line", 400, lambda: parse_datagram(_req("OPTIONS sip:b@h HTTP/1.1"))),
    ("malformed method", 400, lambda: parse_datagram(_req("OPT(IONS sip:b@h SIP/2.0"))),
    ("malformed Request-URI", 400, lambda: parse_datagram(_req("OPTIONS nouri SIP/2.0"))),
    ("unsupported URI scheme", 416, lambda: parse_datagram(_req("OPTIONS http://x SIP/2.0"))),
    (
        "headers are not valid UTF-8",
        400,
        lambda: parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n"),
    ),
    ("empty message", 400, lambda: parse_datagram(b"\r\n\r\n\r\n")),
    (
        "continuation line before the first header",
        400,
        lambda: parse_datagram(b"OPTIONS sip:b@h SIP/2.0\r\n folded\r\nVia: x\r\n\r\n"),
    ),
    ("malformed header line", 400, lambda: parse_datagram(_req(extra="NoColonHere\r\n"))),
    ("malformed header name", 400, lambda: parse_datagram(_req(extra="Bad Name: x\r\n"))),
    ("too many headers", 513, lambda: parse_datagram(_req(extra="X-A: 1\r\n" * 300))),
    ("conflicting Content-Length headers", 400, lambda: parse_datagram(_req(extra="l: 5\r\n"))),
    (
        "malformed Content-Length",
        400,
        lambda: parse_datagram(_req(extra="", body="").replace(b"Content-Length: 0", b"Content-Length: -1")),
    ),
    ("missing Via header", 400, lambda: parse_datagram(_req(drop="Via"))),
    ("missing Call-ID header", 400, lambda: parse_datagram(_req(drop="Call-ID"))),
    ("missing CSeq header", 400, lambda: parse_datagram(_req(drop="CSeq"))),
    ("missing From header", 400, lambda: parse_datagram(_req(drop="From"))),
    ("missing To header", 400, lambda: parse_datagram(_req(drop="To"))),
    ("malformed CSeq", 400, lambda: parse_datagram(_req().replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS"))),
    ("CSeq method", 400, lambda: parse_datagram(_req().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"))),
    ("message too large", 513, lambda: parse_datagram(b"x" * 70_000)),
    ("message too large", 513, lambda: _stream(b"x" * 70_000)),
    (
        "message too large",
        513,
        lambda: _stream(_req().replace(b"Content-Length: 0", b"Content-Length: 99999")),
    ),
    (
        "body shorter than Content-Length",
        400,
        lambda: parse_datagram(_req().replace(b"Length: 0", b"Length: 9")),
    ),
    (
        "missing Content-Length on a stream transport",
        400,
        lambda: _stream(_req().replace(b"Content-Length: 0\r\n", b"")),
    ),
    ("stream unusable after a framing error", 400, _poisoned),
    ("malformed URI", 400, lambda: SipUri.parse("sip:user@bad host")),
    ("malformed URI", 400, lambda: SipUri.parse("tel:")),
    ("malformed URI", 400, lambda: SipUri.parse("sip:h:99999")),
    ("malformed From header", 400, lambda: NameAddr.parse('"unterminated <sip:a@b>')),
    ("malformed To header", 400, lambda: NameAddr.parse("<sip:a@b", "To")),
    ("malformed Contact header", 400, lambda: NameAddr.parse("sip:a@b c", "Contact")),
    ("malformed From header", 400, lambda: NameAddr.parse('"x" sip:a@b')),
    ("malformed Via header", 400, lambda: Via.parse("SIP/2.0 h")),
    ("malformed Via header", 400, lambda: Via.parse("SIP/2.0/UDP h@x")),
]


@pytest.mark.parametrize(("prefix", "status", "action"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_messages(prefix: str, status: int, action: object) -> None:
    assert callable(action)
    with pytest.raises(RemoteProtocolError) as info:
        action()
    assert str(info.value).startswith(prefix), str(info.value)
    assert info.value.status_hint == status


def test_every_error_message_is_triggered() -> None:
    """Each literal message prefix in the parser modules appears in some test table."""
    import re

    from test_sip_bodies import BODY_ERROR_CASES

    src = Path(__file__).resolve().parents[2] / "voip_sos" / "sip"
    tested = {c[0] for c in ERROR_CASES} | {c[0] for c in BODY_ERROR_CASES}
    missing = []
    for name in ("message.py", "headers.py", "multipart.py", "digest.py", "sdp.py", "pidf.py"):
        for m in re.finditer(r'RemoteProtocolError\(\s*f?"([^"{]*)', (src / name).read_text()):
            prefix = m.group(1).strip()
            if not any(t.startswith(prefix) or prefix.startswith(t) for t in tested):
                missing.append(f"{name}: {prefix!r}")
    assert not missing, missing


_CHARS = st.sampled_from(list(b'SIP/2.0 INVITE sip:@;=,<>"\\:\r\n\t 0123456789abcCVviltfm-%\xff\x00'))


def _parse_structured(msg: Message | None) -> None:
    """Everything the agent parses out of a message must fail only with our errors too."""
    if msg is None:
        return
    for v in msg.headers.get_all("Via"):
        with contextlib.suppress(ProtocolError):
            Via.parse(v)
    for name in ("From", "To", "Contact", "Record-Route"):
        for v in msg.headers.get_all(name):
            with contextlib.suppress(ProtocolError):
                NameAddr.parse(v, name)
    with contextlib.suppress(ProtocolError):
        CSeq.parse(msg.headers.get("CSeq") or "")


@settings(settings.get_profile("sip-fuzz"))
@given(st.one_of(st.binary(max_size=400), st.lists(_CHARS, max_size=400).map(bytes)))
def test_fuzz_datagram_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        _parse_structured(parse_datagram(data))


def _stream_msg(data: bytes) -> Message | None:
    sp = StreamParser()
    sp.feed(data)
    return sp.next_message()


@settings(settings.get_profile("sip-fuzz"))
@given(st.integers(0, len(CAPTURES) - 1), st.integers(0, 600), st.binary(min_size=1, max_size=8))
def test_fuzz_mutated_captures(index: int, pos: int, junk: bytes) -> None:
    data = _load(CAPTURES[index])
    pos = min(pos, len(data))
    mutated = data[:pos] + junk + data[pos + len(junk) :]
    with contextlib.suppress(ProtocolError):
        _parse_structured(parse_datagram(mutated))
    with contextlib.suppress(ProtocolError):
        _parse_structured(_stream_msg(mutated))
