"""Structured SIP header values (RFC 3261 §19.1, §20, §25.1): URIs, name-addr, Via, CSeq.

Each type parses from the header text and renders back to it; parameters keep their order.
Malformed values raise `RemoteProtocolError` with a message naming the header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote

from voip_sos.errors import RemoteProtocolError

__all__ = ["CSeq", "NameAddr", "SipUri", "Via", "parse_params", "render_params"]

Params = dict[str, str | None]


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_params(text: str) -> Params:
    """`;a=1;b;c="x;y"` -> {"a": "1", "b": None, "c": '"x;y"'} (names lower-cased)."""
    params: Params = {}
    for raw in _split_outside_quotes(text, ";"):
        raw = raw.strip()
        if not raw:
            continue
        name, eq, value = raw.partition("=")
        params[name.strip().lower()] = value.strip() if eq else None
    return params


def render_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote_string(value: str) -> str:
    """Strip the quotes of a quoted-string and undo its backslash escapes (§25.1)."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def quote_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$")


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip:, sips: or tel: URI; user part is kept unescaped, rendered escaped (§19.1.2)."""

    scheme: str = "sip"
    user: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = field(default_factory=dict)
    headers: str = ""
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips", "tel"):
            raise RemoteProtocolError(f"unsupported URI scheme in {text[:80]!r}", 416)
        if scheme == "tel":
            number, _, ptext = rest.partition(";")
            if not number:
                raise RemoteProtocolError(f"malformed URI {text[:80]!r}")
            return cls(scheme="tel", user=number, params=parse_params(ptext))
        rest, _, hdrs = rest.partition("?")
        user: str | None = None
        password: str | None = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, _, pw = userinfo.partition(":")
            password = unquote(pw) if pw else None
            user = unquote(user)
        hostport, _, ptext = rest.partition(";")
        m = _HOST_RE.match(hostport)
        if not m or (m.group(2) is not None and not 0 < int(m.group(2)) < 65536):
            raise RemoteProtocolError(f"malformed URI {text[:80]!r}")
        port = int(m.group(2)) if m.group(2) else None
        return cls(scheme, user, m.group(1).lower(), port, parse_params(ptext), hdrs, password)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{render_params(self.params)}"
        out = f"{self.scheme}:"
        if self.user is not None:
            out += quote(self.user, safe="-_.!~*'()&=+$,;?/")
            if self.password is not None:
                out += ":" + quote(self.password, safe="-_.!~*'()&=+$,")
            out += "@"
        out += self.host
        if self.port is not None:
            out += f":{self.port}"
        out += render_params(self.params)
        if self.headers:
            out += "?" + self.headers
        return out

    def with_params(self, **params: str | None) -> SipUri:
        return replace(self, params={**self.params, **params})

    @property
    def transport(self) -> str:
        return (self.params.get("transport") or "udp").lower()


@dataclass(frozen=True, slots=True)
class NameAddr:
    """`"Display" <uri>;tag=x` as in From, To, Contact, Route, Record-Route (§20)."""

    uri: SipUri
    display: str | None = None
    params: Params = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, header: str = "From") -> NameAddr:
        text = text.strip()
        display: str | None = None
        if text.startswith('"'):
            m = re.match(r'"((?:[^"\\]|\\.)*)"\s*', text)
            if not m:
                raise RemoteProtocolError(f"malformed {header} header")
            display = unquote_string(f'"{m.group(1)}"')
            text = text[m.end() :]
        lt = text.find("<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise RemoteProtocolError(f"malformed {header} header")
            if display is None and text[:lt].strip():
                display = text[:lt].strip()
            uri_text = text[lt + 1 : gt]
            params = parse_params(text[gt + 1 :])
        else:
            if display is not None:
                raise RemoteProtocolError(f"malformed {header} header")
            # §20: without <>, URI parameters belong to the header, not the URI.
            uri_text, _, ptext = text.partition(";")
            params = parse_params(ptext)
        if header in ("Contact",) and uri_text == "*":
            return cls(SipUri(scheme="sip", host="*"), None, params)
        try:
            uri = SipUri.parse(uri_text)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"malformed {header} header: {exc}", exc.status_hint) from None
        return cls(uri, display, params)

    def __str__(self) -> str:
        disp = f"{quote_string(self.display)} " if self.display else ""
        return f"{disp}<{self.uri}>{render_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        return replace(self, params={**self.params, "tag": tag})


_VIA_RE = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s]+)\s*(;.*)?$", re.S)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (§20.42): transport, sent-by and parameters (branch, received, rport)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA_RE.match(text.strip())
        if not m:
            raise RemoteProtocolError(f"malformed Via header {text[:80]!r}")
        hm = _HOST_RE.match(m.group(2))
        if not hm:
            raise RemoteProtocolError(f"malformed Via header {text[:80]!r}")
        port = int(hm.group(2)) if hm.group(2) else None
        return cls(m.group(1).upper(), hm.group(1), port, parse_params(m.group(3) or ""))

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{render_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = re.fullmatch(r"\s*(\d{1,10})\s+([A-Za-z0-9.!%*_+`'~-]+)\s*", text)
        if not m or int(m.group(1)) >= 2**31:
            raise RemoteProtocolError(f"malformed CSeq {text!r}")
        return cls(int(m.group(1)), m.group(2))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
