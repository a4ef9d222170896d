"""SDP (RFC 4566) offer/answer (RFC 3264) for one audio stream: PCMA/PCMU + telephone-event.

We offer the configured G.711 codecs in order with telephone-event/8000 (RFC 4733) and ptime 20.
An answer (or an incoming offer) is reduced to `MediaParams`: where to send, which payload type,
the DTMF payload type and whether the far end has put us on hold (§8.4: sendonly / inactive, or
the RFC 2543 style c=0.0.0.0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from voip_sos.errors import RemoteProtocolError

__all__ = [
    "PTIME_MS",
    "STATIC_PAYLOAD_TYPES",
    "MediaParams",
    "SessionDescription",
    "build_answer",
    "build_offer",
    "negotiate",
]

PTIME_MS = 20
TELEPHONE_EVENT_PT = 101
# RFC 3551 table 4: the static payload types we speak.
STATIC_PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_REVERSE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


@dataclass(slots=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attr(self, name: str) -> list[str | None]:
        return [v for n, v in self.attributes if n == name]

    @property
    def direction(self) -> str | None:
        for n, _ in self.attributes:
            if n in _DIRECTIONS:
                return n
        return None


@dataclass(slots=True)
class SessionDescription:
    origin: str
    name: str = "-"
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("SDP is not valid UTF-8") from None
        sd: SessionDescription | None = None
        current: MediaDescription | None = None
        for raw in text.replace("\r\n", "\n").split("\n"):
            line = raw.strip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=":
                raise RemoteProtocolError(f"malformed SDP line {line[:60]!r}")
            kind, value = line[0], line[2:]
            if sd is None:
                if kind != "v" or value.strip() != "0":
                    raise RemoteProtocolError("SDP does not start with v=0")
                sd = cls(origin="")
                continue
            if kind == "o":
                sd.origin = value
            elif kind == "s":
                sd.name = value
            elif kind == "c":
                addr = _connection_address(value)
                if current is None:
                    sd.connection = addr
                else:
                    current.connection = addr
            elif kind == "m":
                parts = value.split()
                if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                    raise RemoteProtocolError(f"malformed SDP media line {line[:60]!r}")
                current = MediaDescription(parts[0], int(parts[1].split("/")[0]), parts[2], parts[3:])
                sd.media.append(current)
            elif kind == "a":
                name, colon, val = value.partition(":")
                target = current.attributes if current is not None else sd.attributes
                target.append((name.strip(), val.strip() if colon else None))
        if sd is None:
            raise RemoteProtocolError("empty SDP")
        if not sd.origin:
            raise RemoteProtocolError("SDP without o= line")
        return sd

    def to_bytes(self) -> bytes:
        lines = ["v=0", f"o={self.origin}", f"s={self.name}"]
        if self.connection:
            lines.append(f"c=IN {_ip_kind(self.connection)} {self.connection}")
        lines.append("t=0 0")
        lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection:
                lines.append(f"c=IN {_ip_kind(m.connection)} {m.connection}")
            lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in m.attributes]
        return ("\r\n".join(lines) + "\r\n").encode()


def _ip_kind(addr: str) -> str:
    return "IP6" if ":" in addr else "IP4"


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise RemoteProtocolError(f"malformed SDP connection line {value[:60]!r}")
    return parts[2].split("/")[0]


@dataclass(frozen=True, slots=True)
class MediaParams:
    """The negotiated audio stream as seen from our side."""

    remote_addr: str
    remote_port: int
    codec: str
    payload_type: int
    dtmf_payload_type: int | None
    direction: str
    """Our direction after negotiation: sendrecv, or recvonly when the far end holds us."""
    ptime_ms: int = PTIME_MS

    @property
    def on_hold(self) -> bool:
        return self.direction in ("recvonly", "inactive") or self.remote_addr == "0.0.0.0"


def _audio_media(
    codecs: tuple[str, ...], port: int, direction: str, dtmf_pt: int = TELEPHONE_EVENT_PT
) -> MediaDescription:
    formats = [str(STATIC_PAYLOAD_TYPES[c]) for c in codecs] + [str(dtmf_pt)]
    attrs: list[tuple[str, str | None]] = [("rtpmap", f"{STATIC_PAYLOAD_TYPES[c]} {c}/8000") for c in codecs]
    attrs += [("rtpmap", f"{dtmf_pt} telephone-event/8000"), ("fmtp", f"{dtmf_pt} 0-16")]
    attrs += [("ptime", str(PTIME_MS)), (direction, None)]
    return MediaDescription("audio", port, "RTP/AVP", formats, attributes=attrs)


def build_offer(
    address: str,
    port: int,
    codecs: tuple[str, ...],
    session_id: int,
    version: int,
    direction: str = "sendrecv",
) -> SessionDescription:
    """Our offer: one audio stream with `codecs` in preference order plus telephone-event."""
    for c in codecs:
        if c not in STATIC_PAYLOAD_TYPES:
            raise ValueError(f"unsupported codec {c!r}")
    return SessionDescription(
        origin=f"voip-sos {session_id} {version} IN {_ip_kind(address)} {address}",
        name="voip-sos",
        connection=address,
        media=[_audio_media(codecs, port, direction)],
    )


def _payload_map(m: MediaDescription) -> dict[int, str]:
    """Payload type -> encoding name (upper case), static types filled in (RFC 3551)."""
    names: dict[int, str] = {}
    for fmt in m.formats:
        if fmt.isdigit():
            pt = int(fmt)
            for name, static in STATIC_PAYLOAD_TYPES.items():
                if static == pt:
                    names[pt] = name
    for val in m.attr("rtpmap"):
        if val is None:
            continue
        mm = re.match(r"(\d+)\s+([^/\s]+)/(\d+)", val)
        if mm:
            names[int(mm.group(1))] = mm.group(2).upper() + (
                "" if mm.group(3) == "8000" else "/" + mm.group(3)
            )
    return names


def negotiate(
    remote: SessionDescription, codecs: tuple[str, ...], offerer_preference: bool = True
) -> MediaParams:
    """Reduce the far end's SDP (answer to our offer, or its offer) to the stream we will use.

    Raises RemoteProtocolError (488) when no audio stream with a codec we speak is present.
    With `offerer_preference` the far end's order wins (RFC 3264 §6.1: the answerer should use the
    offerer's preference); otherwise ours does.
    """
    for m in remote.media:
        if m.media != "audio" or m.port == 0 or not m.proto.upper().startswith("RTP/AVP"):
            continue
        names = _payload_map(m)
        remote_pts = [int(f) for f in m.formats if f.isdigit()]
        ours = [pt for pt in remote_pts if names.get(pt) in codecs]
        if not ours:
            continue
        if not offerer_preference:
            ours.sort(key=lambda pt: codecs.index(names[pt]))
        pt = ours[0]
        dtmf = next((p for p in remote_pts if names.get(p) == "TELEPHONE-EVENT"), None)
        addr = m.connection or remote.connection
        if addr is None:
            raise RemoteProtocolError("SDP without connection address", 488)
        remote_dir = m.direction or _session_direction(remote) or "sendrecv"
        ptime = next((int(v) for v in m.attr("ptime") if v and v.isdigit()), PTIME_MS)
        direction = _REVERSE[remote_dir]
        if addr == "0.0.0.0" and direction == "sendrecv":
            direction = "recvonly"
        return MediaParams(addr, m.port, names[pt], pt, dtmf, direction, ptime)
    raise RemoteProtocolError("no common audio codec in SDP", 488)


def _session_direction(sd: SessionDescription) -> str | None:
    for n, _ in sd.attributes:
        if n in _DIRECTIONS:
            return n
    return None


def build_answer(
    offer: SessionDescription,
    chosen: MediaParams,
    address: str,
    port: int,
    session_id: int,
    version: int,
) -> SessionDescription:
    """Our answer to `offer` (RFC 3264 §6): same m-line count, the chosen codec, DTMF if offered,
    direction mirroring theirs (a hold offer gets recvonly/inactive back)."""
    media: list[MediaDescription] = []
    for m in offer.media:
        if m.media != "audio" or m.port == 0 or (len(media) and any(x.port for x in media)):
            media.append(MediaDescription(m.media, 0, m.proto, m.formats[:1]))
            continue
        codec_pt = chosen.payload_type
        formats = [str(codec_pt)]
        attrs: list[tuple[str, str | None]] = [("rtpmap", f"{codec_pt} {chosen.codec}/8000")]
        if chosen.dtmf_payload_type is not None:
            formats.append(str(chosen.dtmf_payload_type))
            attrs += [
                ("rtpmap", f"{chosen.dtmf_payload_type} telephone-event/8000"),
                ("fmtp", f"{chosen.dtmf_payload_type} 0-16"),
            ]
        attrs += [("ptime", str(PTIME_MS)), (chosen.direction, None)]
        media.append(MediaDescription("audio", port, m.proto, formats, attributes=attrs))
    return SessionDescription(
        origin=f"voip-sos {session_id} {version} IN {_ip_kind(address)} {address}",
        name="voip-sos",
        connection=address,
        media=media,
    )
