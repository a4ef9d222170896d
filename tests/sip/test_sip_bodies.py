"""Digest (RFC 2617 / RFC 7616 vectors), SDP offer/answer and hold, PIDF-LO, multipart bodies."""

from __future__ import annotations

import pytest

from voip_sos.errors import AuthError, RemoteProtocolError
from voip_sos.sip.digest import build_authorization, digest_response, parse_challenge, pick_challenge
from voip_sos.sip.multipart import BodyPart, build_multipart, parse_multipart
from voip_sos.sip.pidf import CivicAddress, build_pidf_lo, geolocation_headers, parse_pidf_lo
from voip_sos.sip.sdp import SessionDescription, build_answer, build_offer, negotiate

# ---------------------------------------------------------------------------------------------
# Digest


def test_rfc2617_vector() -> None:
    # RFC 2617 §3.5.
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc=1,
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "qop": "auth",
    "nc": 1,
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    # RFC 7616 §3.9.1; RFC 8760 uses the same SHA-256 computation for SIP.
    assert digest_response(algorithm=algorithm, **RFC7616) == expected  # type: ignore[arg-type]


def test_rfc7616_authorization_header() -> None:
    ch = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    assert ch.qop == ("auth", "auth-int") and ch.algorithm == "SHA-256" and not ch.stale
    value = build_authorization(
        ch,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce=RFC7616["cnonce"],  # type: ignore[arg-type]
    )
    assert 'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"' in value
    assert "qop=auth, nc=00000001" in value
    assert 'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"' in value


def test_sip_vector_from_baresip() -> None:
    # An independent implementation's answer, captured in tests/fixtures/sip/baresip-register-auth.txt.
    got = digest_response(
        algorithm="MD5",
        username="tester",
        realm="127.0.0.1",
        password="secret",
        method="REGISTER",
        uri="sip:127.0.0.1",
        nonce="5f3a1c2b00000001",
        qop="auth",
        nc=1,
        cnonce="a85587ef390fbdfe",
    )
    assert got == "5b52d2b638cd13b3b85e3b74b94b4981"


def test_rfc2617_without_qop_and_sess_and_auth_int() -> None:
    base = dict(username="u", realm="r", password="p", method="REGISTER", uri="sip:r", nonce="n")
    import hashlib

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1, ha2 = md5("u:r:p"), md5("REGISTER:sip:r")
    assert digest_response(algorithm="MD5", **base) == md5(f"{ha1}:n:{ha2}")  # type: ignore[arg-type]
    sess = md5(f"{ha1}:n:c")
    got = digest_response(algorithm="MD5-sess", qop="auth", cnonce="c", **base)  # type: ignore[arg-type]
    assert got == md5(f"{sess}:n:00000001:c:auth:{ha2}")
    ha2i = md5(f"REGISTER:sip:r:{md5('body')}")
    got = digest_response(algorithm="MD5", qop="auth-int", cnonce="c", body=b"body", **base)  # type: ignore[arg-type]
    assert got == md5(f"{ha1}:n:00000001:c:auth-int:{ha2i}")


def test_stale_and_pick_strongest() -> None:
    md5 = 'Digest realm="pbx", nonce="a", algorithm=MD5, qop="auth"'
    sha = 'Digest realm="pbx", nonce="b", algorithm=SHA-256, qop="auth", stale=TRUE'
    ch = pick_challenge([md5, sha], proxy=True)
    assert ch.algorithm == "SHA-256" and ch.stale and ch.proxy and ch.nonce == "b"
    with pytest.raises(AuthError):
        pick_challenge(['Digest realm="x", nonce="y", algorithm=SHA-512-256', "Basic realm=x"])


# ---------------------------------------------------------------------------------------------
# SDP

ASTERISK_ANSWER = (
    b"v=0\r\no=- 1 2 IN IP4 192.0.2.5\r\ns=Asterisk\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n"
    b"m=audio 10012 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\na=ptime:20\r\na=maxptime:150\r\na=sendrecv\r\n"
)


def test_offer_shape() -> None:
    offer = build_offer("127.0.0.1", 20000, ("PCMA", "PCMU"), 42, 1)
    text = offer.to_bytes().decode()
    assert "m=audio 20000 RTP/AVP 8 0 101\r\n" in text
    assert "a=rtpmap:8 PCMA/8000" in text and "a=rtpmap:101 telephone-event/8000" in text
    assert "a=ptime:20" in text and "a=sendrecv" in text and "c=IN IP4 127.0.0.1" in text
    assert SessionDescription.parse(offer.to_bytes()).to_bytes() == offer.to_bytes()


def test_answer_picks_their_codec_and_dtmf() -> None:
    mp = negotiate(SessionDescription.parse(ASTERISK_ANSWER), ("PCMA", "PCMU"))
    assert (mp.remote_addr, mp.remote_port, mp.codec, mp.payload_type) == ("192.0.2.5", 10012, "PCMU", 0)
    assert mp.dtmf_payload_type == 101 and not mp.on_hold


@pytest.mark.parametrize(
    ("attr", "conn", "hold", "ours"),
    [
        ("a=sendonly", "192.0.2.5", True, "recvonly"),
        ("a=inactive", "192.0.2.5", True, "inactive"),
        ("a=recvonly", "192.0.2.5", False, "sendonly"),
        ("a=sendrecv", "0.0.0.0", True, "recvonly"),
        ("a=sendrecv", "192.0.2.5", False, "sendrecv"),
    ],
)
def test_hold_detection(attr: str, conn: str, hold: bool, ours: str) -> None:
    sdp = ASTERISK_ANSWER.replace(b"a=sendrecv", attr.encode()).replace(
        b"c=IN IP4 192.0.2.5", f"c=IN IP4 {conn}".encode()
    )
    mp = negotiate(SessionDescription.parse(sdp), ("PCMA", "PCMU"))
    assert mp.on_hold is hold and mp.direction == ours


def test_answer_to_an_offer_mirrors_hold() -> None:
    offer = SessionDescription.parse(
        b"v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n"
        b"m=audio 4000 RTP/AVP 18 8 0 101\r\nc=IN IP4 10.0.0.1\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n"
    )
    mp = negotiate(offer, ("PCMU", "PCMA"))
    assert mp.codec == "PCMA" and mp.remote_port == 4000 and mp.on_hold
    ours = negotiate(offer, ("PCMU", "PCMA"), offerer_preference=False)
    assert ours.codec == "PCMU"
    answer = build_answer(offer, mp, "127.0.0.1", 20002, 7, 1)
    text = answer.to_bytes().decode()
    assert text.count("m=") == 2 and "m=video 0 " in text
    assert "m=audio 20002 RTP/AVP 8 101" in text and "a=recvonly" in text


# ---------------------------------------------------------------------------------------------
# PIDF-LO and multipart


CIVIC = CivicAddress(
    country="CN",
    A1="Beijing",
    A3="Haidian",
    RD="Zhongguancun St",
    HNO="27",
    BLD="3",
    UNIT="2",
    FLR="5",
    ROOM="502",
    NAM="Wang <Li> & family",
    PC="100080",
)


def test_pidf_lo_round_trip_and_escaping() -> None:
    doc = build_pidf_lo("pres:uid-7@sos.example.net", CIVIC, "2026-11-24T19:00:00Z")
    assert b"&lt;Li&gt; &amp; family" in doc
    assert b"urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" in doc
    entity, civic = parse_pidf_lo(doc)
    assert entity == "pres:uid-7@sos.example.net" and civic == CIVIC
    assert geolocation_headers("loc1@sos") == [
        ("Geolocation", "<cid:loc1@sos>"),
        ("Geolocation-Routing", "yes"),
    ]


def test_multipart_round_trip() -> None:
    sdp = build_offer("127.0.0.1", 20000, ("PCMA",), 1, 1).to_bytes()
    pidf = build_pidf_lo("pres:x@y", CIVIC, "2026-11-24T19:00:00Z")
    ctype, body = build_multipart(
        [
            BodyPart("application/sdp", sdp),
            BodyPart("application/pidf+xml", pidf, (("Content-ID", "<loc@x>"),)),
        ],
        "boundary42",
    )
    assert ctype == "multipart/mixed;boundary=boundary42"
    parts = parse_multipart(ctype, body)
    assert [p.content_type for p in parts] == ["application/sdp", "application/pidf+xml"]
    assert parts[0].body == sdp and parts[1].body == pidf and parts[1].header("content-id") == "<loc@x>"
    # A quoted boundary and a preamble are accepted too.
    parts = parse_multipart('multipart/mixed; boundary="boundary42"', b"preamble\r\n" + body)
    assert len(parts) == 2


def _sdp(text: str) -> SessionDescription:
    return SessionDescription.parse(text.encode())


BODY_ERROR_CASES: list[tuple[str, object]] = [
    ("malformed digest parameter", lambda: parse_challenge('Digest realm="a", nonce')),
    ("unterminated quoted string in challenge", lambda: parse_challenge('Digest realm="a')),
    ("unsupported authentication scheme", lambda: parse_challenge("Basic realm=x")),
    ("challenge without realm", lambda: parse_challenge('Digest nonce="a"')),
    ("challenge without nonce", lambda: parse_challenge('Digest realm="a"')),
    ("SDP is not valid UTF-8", lambda: SessionDescription.parse(b"v=0\r\n\xff")),
    ("malformed SDP line", lambda: _sdp("v=0\r\nxyz\r\n")),
    ("SDP does not start with v=0", lambda: _sdp("o=x\r\n")),
    ("malformed SDP media line", lambda: _sdp("v=0\r\no=x\r\nm=audio x RTP/AVP 0\r\n")),
    ("empty SDP", lambda: _sdp("\r\n")),
    ("SDP without o= line", lambda: _sdp("v=0\r\ns=-\r\n")),
    ("malformed SDP connection line", lambda: _sdp("v=0\r\no=x\r\nc=IN IP4\r\n")),
    (
        "SDP without connection address",
        lambda: negotiate(_sdp("v=0\r\no=x\r\nm=audio 1 RTP/AVP 0\r\n"), ("PCMU",)),
    ),
    (
        "no common audio codec in SDP",
        lambda: negotiate(_sdp("v=0\r\no=x\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 18\r\n"), ("PCMU",)),
    ),
    ("malformed PIDF-LO", lambda: parse_pidf_lo(b"<presence")),
    ("PIDF-LO root is not presence", lambda: parse_pidf_lo(b"<x/>")),
    (
        "PIDF-LO without civicAddress",
        lambda: parse_pidf_lo(b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>'),
    ),
    ("multipart body without boundary", lambda: parse_multipart("multipart/mixed", b"")),
    (
        "multipart body without closing boundary",
        lambda: parse_multipart("multipart/mixed;boundary=b", b"--b\r\n\r\nx"),
    ),
    (
        "multipart body without closing boundary",
        lambda: parse_multipart("multipart/mixed;boundary=b", b"--b\r\n\r\nx\r\n--b\r\n\r\ny"),
    ),
    (
        "multipart part without blank line",
        lambda: parse_multipart("multipart/mixed;boundary=b", b"--b\r\nContent-Type: a/b\r\nx\r\n--b--"),
    ),
    (
        "malformed multipart header",
        lambda: parse_multipart("multipart/mixed;boundary=b", b"--b\r\nnocolon\r\n\r\nx\r\n--b--"),
    ),
]


@pytest.mark.parametrize(("prefix", "action"), BODY_ERROR_CASES, ids=[c[0] for c in BODY_ERROR_CASES])
def test_body_error_messages(prefix: str, action: object) -> None:
    assert callable(action)
    with pytest.raises(RemoteProtocolError) as info:
        action()
    assert str(info.value).startswith(prefix), str(info.value)
