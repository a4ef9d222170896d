"""SIP messages (RFC 3261 §7, §20, §25): parse and serialize requests and responses.

Owns the wire format only: start lines, headers (compact forms, folding, comma-separated values),
`Content-Length` framing for UDP datagrams (§18.3) and TCP streams. Header *values* with structure
(URIs, name-addr, Via, CSeq) live in `headers.py`; multipart bodies in `multipart.py`.

Headers keep the spelling they arrived with, so a parsed message serializes back to the same bytes;
lookups are by canonical name, so `i:` and `Call-ID:` are the same header.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from voip_sos.errors import RemoteProtocolError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Headers",
    "Message",
    "Request",
    "Response",
    "StreamParser",
    "canonical_name",
    "parse_datagram",
    "parse_message",
]

SIP_VERSION = "SIP/2.0"
# A datagram cannot be larger than 65,535 bytes; a TCP message larger than this is refused (513).
MAX_MESSAGE_BYTES = 65_535
MAX_HEADER_COUNT = 256

# RFC 3261 §7.3.3 plus the compact forms registered since (RFC 3265, 3515, 3841, 4028, 4474).
_COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}
# Headers whose canonical spelling is not plain title case.
_SPECIAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}
# Headers that may be split on top-level commas (§7.3.1). Auth headers and dates carry commas
# inside a single value and are deliberately absent.
_LIST_HEADERS = frozenset(
    {
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow",
        "Allow-Events",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "In-Reply-To",
        "Proxy-Require",
        "Record-Route",
        "Require",
        "Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    }
)
# §8.1.1: a request is malformed without these.
_REQUIRED = ("To", "From", "CSeq", "Call-ID", "Via")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")


@functools.lru_cache(maxsize=4096)
def canonical_name(name: str) -> str:
    """`i`, `call-id` and `CALL-ID` all become `Call-ID`. Memoised: every header lookup compares
    each field's name this way, and a busy agent does hundreds of thousands of them a second."""
    low = name.strip().lower()
    if len(low) == 1 and low in _COMPACT:
        return _COMPACT[low]
    if low in _SPECIAL:
        return _SPECIAL[low]
    return "-".join(part.capitalize() for part in low.split("-"))


def split_commas(value: str) -> list[str]:
    """Split on commas outside quotes and angle brackets (§7.3.1)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


class Headers:
    """An ordered multi-map of header fields keeping the received spelling of each name."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(n, v) for n, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self.canonical() == other.canonical()

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def canonical(self) -> list[tuple[str, str]]:
        return [(canonical_name(n), v) for n, v in self._items]

    def copy(self) -> Headers:
        return Headers(self._items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field's value (whole, unsplit), or `default`."""
        want = canonical_name(name)
        for n, v in self._items:
            if canonical_name(n) == want:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, comma lists split for list headers, in order."""
        want = canonical_name(name)
        out: list[str] = []
        for n, v in self._items:
            if canonical_name(n) == want:
                out.extend(split_commas(v) if want in _LIST_HEADERS else [v])
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def prepend(self, name: str, value: str) -> None:
        self._items.insert(0, (name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every `name` field by one, at the place of the first (or at the end)."""
        want = canonical_name(name)
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if canonical_name(n) == want:
                if not placed:
                    out.append((n, value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((name, value))
        self._items = out

    def remove(self, name: str) -> None:
        want = canonical_name(name)
        self._items = [(n, v) for n, v in self._items if canonical_name(n) != want]

    def remove_first(self, name: str) -> None:
        """Drop the first value of a list header (e.g. our own top Via)."""
        want = canonical_name(name)
        for i, (n, v) in enumerate(self._items):
            if canonical_name(n) == want:
                rest = split_commas(v)[1:]
                if rest:
                    self._items[i] = (n, ", ".join(rest))
                else:
                    del self._items[i]
                return


@dataclass(slots=True, eq=False)
class Message:
    """Fields common to requests and responses."""

    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize; `Content-Length` always states the real body length (§20.14)."""
        lines = [self.start_line()]
        length_written = False
        for name, value in self.headers:
            if canonical_name(name) == "Content-Length":
                if length_written:
                    continue
                # Keep the received spelling ("  129") when it is right, so captures round-trip.
                if value.strip() != str(len(self.body)):
                    value = str(len(self.body))
                length_written = True
            lines.append(f"{name}: {value}" if value else f"{name}:")
        if not length_written:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Message)
        return (
            self.start_line() == other.start_line()
            and self.headers == other.headers
            and self.body == other.body
        )


@dataclass(slots=True, eq=False)
class Request(Message):
    method: str = ""
    uri: str = ""

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id}>"


@dataclass(slots=True, eq=False)
class Response(Message):
    status: int = 0
    reason: str = ""

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.call_id}>"


# ---------------------------------------------------------------------------------------------
# Parsing


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the empty line; tolerate bare LF line ends as §7.5 suggests implementations do."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = data.find(sep)
        if idx >= 0:
            return data[:idx], data[idx + len(sep) :]
    raise RemoteProtocolError("missing empty line after headers")


def _parse_start_line(line: str) -> Message:
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if parts[0] != SIP_VERSION:
            raise RemoteProtocolError(f"unsupported SIP version {parts[0]!r}", 505)
        if len(parts) < 2 or not re.fullmatch(r"[1-6]\d\d", parts[1]):
            raise RemoteProtocolError(f"malformed status line {line!r}")
        return Response(status=int(parts[1]), reason=parts[2] if len(parts) > 2 else "")
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise RemoteProtocolError(f"malformed request line {line!r}")
    method, uri, version = parts
    if not _TOKEN_RE.match(method):
        raise RemoteProtocolError(f"malformed method {method!r}")
    if version != SIP_VERSION:
        if version.upper().startswith("SIP/"):
            raise RemoteProtocolError(f"unsupported SIP version {version!r}", 505)
        raise RemoteProtocolError(f"malformed request line {line!r}")
    if ":" not in uri:
        raise RemoteProtocolError(f"malformed Request-URI {uri!r}")
    if uri.split(":", 1)[0].lower() not in ("sip", "sips", "tel"):
        raise RemoteProtocolError(f"unsupported URI scheme in {uri!r}", 416)
    return Request(method=method, uri=uri)


def _parse_head(head: bytes) -> tuple[Message, Headers]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("headers are not valid UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    # §7.5: servers should ignore empty lines before the start line (keep-alive CRLFs).
    while lines and lines[0] == "":
        lines.pop(0)
    if not lines:
        raise RemoteProtocolError("empty message")
    msg = _parse_start_line(lines[0])
    items: list[tuple[str, str]] = []
    for raw in lines[1:]:
        if raw[:1] in (" ", "\t"):
            # §7.3.1 header folding: a continuation line joins the previous value with one space.
            if not items:
                raise RemoteProtocolError("continuation line before the first header")
            name, value = items[-1]
            items[-1] = (name, f"{value} {raw.strip()}".strip())
            continue
        if ":" not in raw:
            raise RemoteProtocolError(f"malformed header line {raw[:80]!r}")
        name, value = raw.split(":", 1)
        name = name.rstrip(" \t")
        if not _HEADER_NAME_RE.match(name):
            raise RemoteProtocolError(f"malformed header name {name[:80]!r}")
        items.append((name, value.strip()))
        if len(items) > MAX_HEADER_COUNT:
            raise RemoteProtocolError("too many headers", 513)
    return msg, Headers(items)


def _content_length(headers: Headers) -> int | None:
    values = [v for n, v in headers if canonical_name(n) == "Content-Length"]
    if not values:
        return None
    if len(set(values)) > 1:
        raise RemoteProtocolError("conflicting Content-Length headers")
    if not re.fullmatch(r"\d{1,9}", values[0]):
        raise RemoteProtocolError(f"malformed Content-Length {values[0]!r}")
    return int(values[0])


def _check(msg: Message) -> None:
    for name in _REQUIRED:
        if msg.headers.get(name) is None:
            raise RemoteProtocolError(f"missing {name} header")
    cseq = msg.headers.get("CSeq") or ""
    m = re.fullmatch(r"(\d{1,10})\s+(\S+)", cseq)
    if not m or int(m.group(1)) >= 2**31:
        raise RemoteProtocolError(f"malformed CSeq {cseq!r}")
    if isinstance(msg, Request) and m.group(2) != msg.method:
        raise RemoteProtocolError(f"CSeq method {m.group(2)!r} does not match {msg.method!r}")


def parse_message(head: bytes, body: bytes) -> Message:
    """Build a message from its head (start line + headers, no blank line) and its body."""
    msg, headers = _parse_head(head)
    msg.headers = headers
    msg.body = body
    _check(msg)
    return msg


def parse_datagram(data: bytes) -> Message:
    """Parse one UDP datagram (§18.3): bytes past `Content-Length` are discarded; a missing
    `Content-Length` means the body runs to the end of the datagram."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError("message too large", 513)
    head, rest = _split_head(data)
    msg, headers = _parse_head(head)
    length = _content_length(headers)
    if length is not None:
        if length > len(rest):
            raise RemoteProtocolError("body shorter than Content-Length")
        rest = rest[:length]
    msg.headers = headers
    msg.body = rest
    _check(msg)
    return msg


class StreamParser:
    """Frames messages out of a TCP byte stream (§18.3: `Content-Length` is mandatory there).

    `feed()` buffers bytes; `next_message()` returns one complete message or None. A framing error
    (no or bad `Content-Length`, oversize) poisons the stream: the connection must be closed since
    the next message's start cannot be found. A message that is framed but malformed inside raises
    after it has been consumed, so the caller may answer 400 and go on.
    """

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_bytes
        self.keepalives = 0
        self.poisoned = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_message(self) -> Message | None:
        if self.poisoned:
            raise RemoteProtocolError("stream unusable after a framing error")
        # RFC 5626 §4.4.1: CRLF keep-alives between messages are skipped (and counted).
        while self._buf[:2] == b"\r\n":
            del self._buf[:2]
            self.keepalives += 1
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > self._max:
                self.poisoned = True
                raise RemoteProtocolError("message too large", 513)
            return None
        try:
            msg, headers = _parse_head(bytes(self._buf[:end]))
            length = _content_length(headers)
            if length is None:
                raise RemoteProtocolError("missing Content-Length on a stream transport")
        except RemoteProtocolError:
            self.poisoned = True
            raise
        total = end + 4 + length
        if total > self._max:
            self.poisoned = True
            raise RemoteProtocolError("message too large", 513)
        if len(self._buf) < total:
            return None
        msg.headers = headers
        msg.body = bytes(self._buf[end + 4 : total])
        del self._buf[:total]
        _check(msg)
        return msg

    @property
    def buffered(self) -> int:
        return len(self._buf)
