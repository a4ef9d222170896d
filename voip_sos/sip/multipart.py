"""multipart/mixed bodies (RFC 2046 §5.1, RFC 5621 for SIP): SDP plus a PIDF-LO location part."""

from __future__ import annotations

import re
from dataclasses import dataclass

from voip_sos.errors import RemoteProtocolError

__all__ = ["BodyPart", "build_multipart", "content_type_param", "parse_multipart"]


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One part: its headers (Content-Type first) and its bytes."""

    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        want = name.lower()
        for n, v in self.headers:
            if n.lower() == want:
                return v
        return None


def content_type_param(content_type: str, param: str) -> str | None:
    """A parameter of a Content-Type value, unquoted (`boundary`, `charset`)."""
    for piece in content_type.split(";")[1:]:
        name, _, value = piece.strip().partition("=")
        if name.strip().lower() == param:
            value = value.strip()
            return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return None


def build_multipart(parts: list[BodyPart], boundary: str) -> tuple[str, bytes]:
    """Return (Content-Type value, body) for a multipart/mixed of `parts`."""
    out = bytearray()
    for part in parts:
        out += f"--{boundary}\r\nContent-Type: {part.content_type}\r\n".encode()
        for name, value in part.headers:
            if name.lower() != "content-type":
                out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + part.body + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/mixed;boundary={boundary}", bytes(out)


def parse_multipart(content_type: str, body: bytes) -> list[BodyPart]:
    """Split a multipart body into its parts; the preamble and epilogue are ignored."""
    boundary = content_type_param(content_type, "boundary")
    if not boundary:
        raise RemoteProtocolError("multipart body without boundary")
    delim = b"--" + boundary.encode("utf-8", "replace")
    pieces = re.split(rb"(?:\r?\n)?" + re.escape(delim), body)
    if len(pieces) < 3:
        raise RemoteProtocolError("multipart body without closing boundary")
    parts: list[BodyPart] = []
    closed = False
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            closed = True
            break
        piece = piece.split(b"\n", 1)[1] if b"\n" in piece else b""
        head, sep, content = piece.partition(b"\r\n\r\n")
        if not sep:
            head, sep, content = piece.partition(b"\n\n")
            if not sep:
                # RFC 2046: a part with no headers starts with the blank line itself.
                if piece.startswith((b"\r\n", b"\n")):
                    head, content = b"", piece.lstrip(b"\r\n")
                else:
                    raise RemoteProtocolError("multipart part without blank line")
        headers: list[tuple[str, str]] = []
        for line in head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"):
            if not line.strip():
                continue
            name, colon, value = line.partition(":")
            if not colon:
                raise RemoteProtocolError(f"malformed multipart header {line[:80]!r}")
            headers.append((name.strip(), value.strip()))
        ctype = next((v for n, v in headers if n.lower() == "content-type"), "text/plain")
        parts.append(BodyPart(ctype, content, tuple(headers)))
    if not closed:
        raise RemoteProtocolError("multipart body without closing boundary")
    return parts
