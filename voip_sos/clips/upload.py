"""The clip upload endpoint hubs send their camera clips to (resumable, authenticated per incident).

    HEAD  /hub/v1/clips/{incident}/{camera}/{part}    -> 204, Upload-Offset: bytes stored so far
    PATCH /hub/v1/clips/{incident}/{camera}/{part}    body = the bytes from Upload-Offset on

Borrowed from the IETF's resumable-upload draft (draft-ietf-httpbis-resumable-upload): the client
says where its bytes start (`Upload-Offset`) and how long the whole is (`Upload-Length`); the server
keeps what arrived even when the connection breaks, answers HEAD with how much it has, and a PATCH
that does not start there gets 409 with the right offset. The clip's facts travel as headers on
every PATCH (`Clip-Sha256`, `Clip-Duration`, `Clip-Start`, `Clip-End`, `Clip-Gaps`); with the last
byte the SHA-256 is checked and the clip is stored and logged on the incident (201).

Authentication: `Authorization: Bearer <token>` of an upload grant (voip_sos/clips/tokens.py) for
this very incident. No or an unknown/expired token: 401. A valid grant for another incident (a
hub uploading for someone else's incident): 403, logged. docs/clip.md has the whole protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import aiohttp
from aiohttp import hdrs, web

from voip_sos.clips.archive import PARTS, ClipArchive, ClipMeta, ClipRecord, IntegrityFailed
from voip_sos.clips.storage import OffsetMismatch, TooLarge
from voip_sos.clips.tokens import CLIP_UPLOAD_KIND, CLIP_UPLOAD_PATH
from voip_sos.logs import bind
from voip_sos.web.links import Link, LinkStore

__all__ = ["CAMERA_RE", "add_clip_upload_routes"]

log = logging.getLogger(__name__)

CAMERA_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
READ_CHUNK = 1 << 16
MAX_GAPS = 1000
BODY_STALL_S = 30.0
"""A PATCH whose body stalls this long is ended (what arrived is kept): a half-open connection
must not hold the clip's lock, which HEAD and the next PATCH wait for, forever."""


class BadRequest(Exception):
    """A header is missing or malformed; the message names it."""


def _int_header(request: web.Request, name: str, *, minimum: int) -> int:
    raw = request.headers.get(name)
    if raw is None or not raw.strip().isdigit():
        raise BadRequest(f"{name}: expected a whole number of bytes, got {raw!r}")
    value = int(raw)
    if value < minimum:
        raise BadRequest(f"{name}: must be at least {minimum}")
    return value


def _float_header(request: web.Request, name: str) -> float:
    raw = request.headers.get(name)
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise BadRequest(f"{name}: expected a non-negative number, got {raw!r}")
    return value


def _meta(request: web.Request) -> ClipMeta:
    length = _int_header(request, "Upload-Length", minimum=1)
    sha = (request.headers.get("Clip-Sha256") or "").lower()
    if not _SHA_RE.match(sha):
        raise BadRequest("Clip-Sha256: expected 64 hex digits")
    duration = _float_header(request, "Clip-Duration")
    start = _float_header(request, "Clip-Start")
    end = _float_header(request, "Clip-End")
    if end < start:
        raise BadRequest("Clip-End: before Clip-Start")
    gaps: list[tuple[float, float]] = []
    raw_gaps = request.headers.get("Clip-Gaps")
    if raw_gaps:
        try:
            parsed = json.loads(raw_gaps)
            gaps = [(float(a), float(b)) for a, b in parsed][:MAX_GAPS]
        except (ValueError, TypeError):
            raise BadRequest("Clip-Gaps: expected a JSON list of [start, end] pairs") from None
    return ClipMeta(
        bytes=length,
        sha256=sha,
        duration_s=duration,
        video_start=datetime.fromtimestamp(start, UTC),
        video_end=datetime.fromtimestamp(end, UTC),
        gaps=tuple(gaps),
    )


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    chunks = request.content.iter_chunked(READ_CHUNK).__aiter__()
    while True:
        try:
            async with asyncio.timeout(BODY_STALL_S):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        yield chunk


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _stored_body(rec: ClipRecord) -> dict[str, object]:
    return {
        "clip": rec.id,
        "bytes": rec.bytes,
        "duration_s": rec.duration_s,
        "camera": rec.camera,
        "part": rec.part,
    }


def add_clip_upload_routes(app: web.Application, archive: ClipArchive, links: LinkStore,
                           now: Callable[[], datetime]) -> None:  # fmt: skip
    """Add HEAD and PATCH `/hub/v1/clips/{incident}/{camera}/{part}` to `app`."""

    async def grant_of(request: web.Request) -> tuple[Link | None, web.Response | None]:
        incident = request.match_info["incident"]
        if (
            not incident.isdigit()
            or not CAMERA_RE.match(request.match_info["camera"])
            or (request.match_info["part"] not in PARTS)
        ):
            return None, _error(404, "no such clip (incident id, camera a-z0-9_- up to 32, part recent|full)")
        auth = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, token = auth.partition(" ")
        unauthorized = {"WWW-Authenticate": 'Bearer realm="voip-sos clips"'}
        if scheme.lower() != "bearer" or not _TOKEN_RE.match(token.strip()):
            return None, _error(401, "an upload token is needed (Authorization: Bearer ...)", unauthorized)
        link = await links.resolve(token.strip(), now())
        if link is None or link.kind != CLIP_UPLOAD_KIND:
            return None, _error(401, "upload token unknown or expired", unauthorized)
        if link.incident_id != incident:
            bind(log, incident=incident).warning(
                "clip upload refused: the token is for another incident",
                extra={"hub": link.target, "token_incident": link.incident_id},
            )
            return None, _error(403, "this upload token is for another incident")
        return link, None

    async def head(request: web.Request) -> web.StreamResponse:
        _link, refused = await grant_of(request)
        if refused is not None:
            return refused
        m = request.match_info
        # A PATCH still receiving (the hub's connection broke and it asks again at once) first
        # stores what it got: wait for it, so the offset answered is the real one.
        lock = archive.lock(int(m["incident"]), m["camera"], m["part"])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BODY_STALL_S + 5.0), lock:
                pass
        rec = await archive.find(int(m["incident"]), m["camera"], m["part"])
        if rec is None:
            return web.Response(status=204, headers={"Upload-Offset": "0", "Upload-Complete": "?0"})
        if rec.state == "stored":
            offset, complete = rec.bytes, "?1"
        else:
            offset, complete = await archive.storage.received(rec.storage_key), "?0"
        return web.Response(
            status=204,
            headers={
                "Upload-Offset": str(offset),
                "Upload-Length": str(rec.bytes),
                "Upload-Complete": complete,
            },
        )

    async def patch(request: web.Request) -> web.StreamResponse:
        link, refused = await grant_of(request)
        if refused is not None:
            return refused
        assert link is not None
        m = request.match_info
        incident_id, camera, part = int(m["incident"]), m["camera"], m["part"]
        ilog = bind(log, incident=incident_id).bind(hub=link.target, camera=camera, part=part)
        try:
            offset = _int_header(request, "Upload-Offset", minimum=0)
            meta = _meta(request)
        except BadRequest as exc:
            ilog.warning("clip upload refused: bad request", extra={"error": str(exc)})
            return _error(400, str(exc))
        if meta.bytes > archive.max_bytes:
            return _error(413, f"clip larger than {archive.max_bytes} bytes")
        async with archive.lock(incident_id, camera, part):
            rec = await archive.begin(incident_id, link.target, camera, part, meta, now())
            if rec.state == "stored":
                if rec.sha256 != meta.sha256:
                    return _error(409, "a different clip is already stored here", {"Upload-Complete": "?1"})
                return web.json_response(_stored_body(rec), headers={"Upload-Complete": "?1"})
            try:
                total = await archive.append(rec, offset, _body(request))
            except OffsetMismatch as exc:
                return _error(409, f"upload continues at byte {exc.have}", {"Upload-Offset": str(exc.have)})
            except TooLarge:
                return _error(413, f"more bytes than Upload-Length {meta.bytes}")
            except (ConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                # The connection broke mid-body: what arrived is kept, the hub resumes after it.
                have = await archive.storage.received(rec.storage_key)
                ilog.info("clip upload interrupted", extra={"received": have, "error": str(exc)})
                return _error(400, "upload interrupted", {"Upload-Offset": str(have)})
            if total < rec.bytes:
                return web.Response(
                    status=204, headers={"Upload-Offset": str(total), "Upload-Complete": "?0"}
                )
            try:
                done = await archive.complete(rec, now())
            except IntegrityFailed as exc:
                return _error(422, f"clip does not match Clip-Sha256/Upload-Length ({exc}); upload it again")
        return web.json_response(_stored_body(done), status=201, headers={"Upload-Complete": "?1"})

    path = CLIP_UPLOAD_PATH + "{incident}/{camera}/{part}"
    app.router.add_route("HEAD", path, head)
    app.router.add_route("PATCH", path, patch)
