"""HTTP Digest for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760): pure functions.

Parses `WWW-Authenticate` / `Proxy-Authenticate` challenges and computes the `Authorization` /
`Proxy-Authorization` answer for MD5, MD5-sess, SHA-256 and SHA-256-sess, with or without
qop=auth / auth-int. The cnonce is an argument so tests can use the RFC vectors; the caller draws it
from `secrets`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from voip_sos.errors import AuthError, RemoteProtocolError
from voip_sos.sip.headers import quote_string, unquote_string

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "Challenge",
    "build_authorization",
    "digest_response",
    "parse_challenge",
    "pick_challenge",
]

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
# RFC 8760 §2.4: a UAC prefers the strongest algorithm offered; order = preference.
SUPPORTED_ALGORITHMS = ("SHA-256", "SHA-256-SESS", "MD5", "MD5-SESS")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge; `proxy` is True for 407 / Proxy-Authenticate."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False


def _split_auth_params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    n = len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        start = i
        while i < n and text[i] not in "= \t,":
            i += 1
        name = text[start:i].lower()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=":
            if name:
                raise RemoteProtocolError(f"malformed digest parameter {name!r}")
            break
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise RemoteProtocolError("unterminated quoted string in challenge")
            value = unquote_string(text[i : j + 1])
            i = j + 1
        else:
            start = i
            while i < n and text[i] != ",":
                i += 1
            value = text[start:i].strip()
        if name:
            out[name] = value
    return out


def parse_challenge(value: str, proxy: bool = False) -> Challenge:
    """Parse one `Digest realm=…, nonce=…` challenge value."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise RemoteProtocolError(f"unsupported authentication scheme {scheme!r}")
    params = _split_auth_params(rest)
    if "realm" not in params:
        raise RemoteProtocolError("challenge without realm")
    if "nonce" not in params:
        raise RemoteProtocolError("challenge without nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5").upper(),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        proxy=proxy,
    )


def pick_challenge(values: list[str], proxy: bool = False) -> Challenge:
    """Of several challenges (RFC 8760 §2.4 lets a server offer one per algorithm) take the
    strongest we support; raise AuthError when none is usable."""
    usable: list[Challenge] = []
    for v in values:
        try:
            ch = parse_challenge(v, proxy)
        except RemoteProtocolError:
            continue
        if ch.algorithm in SUPPORTED_ALGORITHMS and (not ch.qop or {"auth", "auth-int"} & set(ch.qop)):
            usable.append(ch)
    if not usable:
        raise AuthError(f"no usable digest challenge in {values!r}")
    return min(usable, key=lambda c: SUPPORTED_ALGORITHMS.index(c.algorithm))


def _h(algorithm: str, data: str | bytes) -> str:
    base = algorithm.removesuffix("-SESS")
    fn = _HASHES.get(base)
    if fn is None:
        raise AuthError(f"unsupported digest algorithm {algorithm!r}")
    return fn(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: int = 1,
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The `response` value (RFC 7616 §3.4.1; RFC 2617 §3.2.2 when qop is None)."""
    algorithm = algorithm.upper()
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    if algorithm.endswith("-SESS"):
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = _h(algorithm, f"{method}:{uri}:{_h(algorithm, body)}")
    else:
        ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


def build_authorization(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """The full `Authorization` / `Proxy-Authorization` value answering `challenge`."""
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if "auth-int" in challenge.qop else None)
    response = digest_response(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        body=body,
    )
    parts = [
        f"username={quote_string(username)}",
        f"realm={quote_string(challenge.realm)}",
        f"nonce={quote_string(challenge.nonce)}",
        f"uri={quote_string(uri)}",
        f"response={quote_string(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc:08x}", f"cnonce={quote_string(cnonce)}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={quote_string(challenge.opaque)}")
    return "Digest " + ", ".join(parts)
