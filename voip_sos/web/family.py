"""The family's page (F13): `/f/{token}`, its live state, and the Revoke door codes button (F12).

A contact's SMS carries a link of kind "family" whose target is that contact's party key
("contact:0"). The token is the only key: no account, and it opens that one incident only. A
wrong, expired or voice token gets the link server's one plain 404.

Routes (added to the public app by `build_app(..., family=FamilyPages(...))`):
- `GET /f/{token}`: the page (static HTML; the script reads the token from its own URL).
- `GET /f/{token}/state`: JSON from the incident log (`family_state.py`), with an ETag so a phone
  polling every 2 s mostly gets 304s.
- `POST /f/{token}/revoke`: asks the injected `Revoker` (backend -> MQTT -> hub -> lock) and logs
  the request and the result in the incident log.
- `GET /f/static/{name}`: the page's script and style (no CDN, no fonts, no analytics).
- `GET /f/{token}/clip/{id}`: a camera clip of this incident (F9, voip_sos/clips/), Range honoured;
  any other incident's clip, a deleted one or a bad token gets the same 404.

Cross-site requests cannot revoke: the POST must carry `X-Family-Nonce`, an HMAC of the token the
page reads from `/state`. A custom header forces a CORS preflight that this server never grants,
and a cross-site page cannot read `/state` to learn the nonce; on top, a present `Origin` (this
host or `http.public_url`) and `Sec-Fetch-Site` must say same-origin.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from voip_sos.incidents.recording import EventRecord
from voip_sos.incidents.store import Incident, IncidentEvent
from voip_sos.logs import bind
from voip_sos.web.family_state import REVOKE_REQUESTED, REVOKE_RESULT, ClipView, Codes, family_state
from voip_sos.web.links import FAMILY_KIND, FAMILY_PATH, Link, LinkStore

if TYPE_CHECKING:
    from voip_sos.clips.archive import ClipArchive

__all__ = [
    "NONCE_HEADER",
    "REVOKE_TIMEOUT_S",
    "CodesSource",
    "FamilyPages",
    "IncidentLog",
    "RevokeResult",
    "Revoker",
    "add_family_routes",
    "issue_family_link",
]

log = logging.getLogger(__name__)

NONCE_HEADER = "X-Family-Nonce"
REVOKE_TIMEOUT_S = 30.0
"""How long the page waits for the hub's answer (MQTT round trip plus the lock confirming each slot)."""
# A fixed key, on purpose: what stops a cross-site POST is the custom header (preflight never
# granted), the Origin check, and that only a page of our origin can read /state. Someone who can
# compute the nonce already holds the token, and with it the page. A per-process random key would
# add nothing against that and would break backends sharing one public URL.
DEFAULT_NONCE_KEY = b"voip-sos family page nonce v1"
STALE_SLACK_S = 10.0
STATIC_FILES = {"family.js": "text/javascript", "family.css": "text/css"}
_SECURITY_HEADERS = {
    # The token is in the URL: no Referer may carry it off, no cache may keep the page.
    "Referrer-Policy": "no-referrer",
    hdrs.CACHE_CONTROL: "private, no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; media-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


@dataclass(frozen=True, slots=True)
class RevokeResult:
    """What the hub reported after clearing the lock's temporary codes."""

    cleared_slots: tuple[int, ...]
    """Reserved slots whose codes were cleared."""
    confirmed: bool
    """The lock confirmed every clear (Zigbee2MQTT state / Home Assistant service answer)."""
    error: str | None = None
    """Why it did not (fully) work: "lock offline", "timeout" …; None on success."""


class Revoker(Protocol):
    async def revoke(self, incident_id: int) -> RevokeResult:
        """Clear every temporary code the incident's hub issued; never the owner's own codes."""
        ...


class CodesSource(Protocol):
    async def codes(self, incident_id: int) -> Codes | None:
        """Door code and parking pass the hub reported for the incident, if any yet."""
        ...


class IncidentLog(Protocol):
    """The part of `IncidentStore` the page uses."""

    async def get(self, incident_id: int) -> Incident | None: ...

    async def events(self, incident_id: int) -> list[IncidentEvent]: ...

    async def append_events(self, events: Sequence[EventRecord]) -> None: ...


@dataclass(slots=True)
class FamilyPages:
    """What the family routes need; the lead backs `revoker` and `codes` with the hub's MQTT link."""

    incidents: IncidentLog
    revoker: Revoker | None = None
    codes: CodesSource | None = None
    nonce_key: bytes = DEFAULT_NONCE_KEY
    """HMAC key of the page nonce; backends sharing one public URL must share it (see module doc)."""
    revoke_timeout_s: float = REVOKE_TIMEOUT_S
    public_url: str | None = None
    """`http.public_url`: behind a reverse proxy the browser's Origin is this, not the Host we see."""
    clips: ClipArchive | None = None
    """The camera clips (F9); None = the page shows no video."""
    _revoking: set[int] = field(default_factory=set)

    def nonce(self, token: str) -> str:
        return hmac.new(self.nonce_key, b"family-revoke:" + token.encode("ascii"), hashlib.sha256).hexdigest()


def _wall() -> datetime:
    return datetime.now(UTC)


def _static(name: str) -> bytes:
    return resources.files("voip_sos.web").joinpath("static", name).read_bytes()


def _stale(requested_at: object, timeout_s: float) -> bool:
    if not isinstance(requested_at, str):
        return True
    # A revoke still running elsewhere ends by its own timeout; past that (plus slack) nobody will answer.
    return _wall() - datetime.fromisoformat(requested_at) > timedelta(seconds=timeout_s + STALE_SLACK_S)


def _same_origin(request: web.Request, public_url: str | None) -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return True  # not a browser, or an old one: the nonce header still has to be right
    ours = {request.headers.get(hdrs.HOST, "")}
    if public_url:
        ours.add(urlsplit(public_url).netloc)
    return origin != "null" and urlsplit(origin).netloc in ours


def add_family_routes(app: web.Application, pages: FamilyPages, links: LinkStore,
                      resolve_token: Callable[[str], bool], not_found: Callable[[], web.Response],
                      now: Callable[[], datetime]) -> None:  # fmt: skip
    """Add the family routes to `app`; `resolve_token(token)` checks the token's shape,
    `not_found()` is the server's one 404, `now()` its wall clock."""
    page_html = _static("family.html")
    assets = {name: (_static(name), ctype) for name, ctype in STATIC_FILES.items()}

    async def link_of(request: web.Request) -> Link | None:
        token = request.match_info["token"]
        if not resolve_token(token):
            return None
        link = await links.resolve(token, now())
        return link if link is not None and link.kind == FAMILY_KIND else None

    async def page(request: web.Request) -> web.StreamResponse:
        link = await link_of(request)
        if link is None:
            return not_found()
        bind(log, incident=link.incident_id).info("family page opened", extra={"party": link.target})
        return web.Response(body=page_html, content_type="text/html", charset="utf-8",
                            headers=_SECURITY_HEADERS)  # fmt: skip

    async def state_of(link: Link, token: str) -> dict[str, Any] | None:
        if not link.incident_id.isdigit():
            return None  # not a link this module issued (incident ids are integers)
        incident_id = int(link.incident_id)
        incident = await pages.incidents.get(incident_id)
        if incident is None:
            return None
        events = await pages.incidents.events(incident_id)
        codes = await pages.codes.codes(incident_id) if pages.codes is not None else None
        clips = await pages.clips.for_incident(incident_id) if pages.clips is not None else []
        views = [
            ClipView(c.id, c.camera, c.part, c.duration_s, c.bytes, c.video_start, c.video_end, len(c.gaps))
            for c in clips
        ]
        body = family_state(incident, events, reader=link.target, codes=codes,
                            can_revoke=pages.revoker is not None, clips=views)  # fmt: skip
        revoke = body["revoke"]
        if incident_id in pages._revoking:
            revoke["state"] = "pending"
        elif revoke["state"] == "pending" and _stale(revoke.get("requested_at"), pages.revoke_timeout_s):
            # Asked for, never answered (the backend that asked stopped): say so, let them try again.
            revoke.update(state="failed", confirmed=False, cleared_slots=[], error="no answer")
        body["nonce"] = pages.nonce(token)
        body["link_expires_at"] = link.expires_at.isoformat()
        return body

    async def state(request: web.Request) -> web.StreamResponse:
        link = await link_of(request)
        body = await state_of(link, request.match_info["token"]) if link is not None else None
        if body is None:
            return not_found()
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        headers = {**_SECURITY_HEADERS, hdrs.ETAG: etag}
        if request.headers.get(hdrs.IF_NONE_MATCH) == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, content_type="application/json", charset="utf-8", headers=headers)

    async def revoke(request: web.Request) -> web.StreamResponse:
        link = await link_of(request)
        if link is None or pages.revoker is None:
            return not_found()
        token = request.match_info["token"]
        nonce = request.headers.get(NONCE_HEADER, "")
        if not _same_origin(request, pages.public_url) or not hmac.compare_digest(nonce, pages.nonce(token)):
            bind(log, incident=link.incident_id).warning("family revoke refused: cross-site or stale page")
            return web.json_response({"error": "forbidden"}, status=403, headers=_SECURITY_HEADERS)
        if not link.incident_id.isdigit():
            return not_found()
        incident_id = int(link.incident_id)
        if incident_id in pages._revoking:
            return web.json_response({"revoke": {"state": "pending"}}, status=409, headers=_SECURITY_HEADERS)
        pages._revoking.add(incident_id)
        try:
            result = await _revoke(pages, pages.revoker, incident_id, link.target)
        finally:
            pages._revoking.discard(incident_id)
        body = {"revoke": {"state": "done" if result.confirmed and not result.error else "failed",
                           "cleared_slots": list(result.cleared_slots), "confirmed": result.confirmed,
                           "error": result.error}}  # fmt: skip
        return web.json_response(body, headers=_SECURITY_HEADERS)

    async def asset(request: web.Request) -> web.StreamResponse:
        found = assets.get(request.match_info["name"])
        if found is None:
            return not_found()
        data, ctype = found
        headers = {**_SECURITY_HEADERS, hdrs.CACHE_CONTROL: "public, max-age=300"}
        return web.Response(body=data, content_type=ctype, charset="utf-8", headers=headers)

    async def clip(request: web.Request) -> web.StreamResponse:
        link = await link_of(request)
        clip_id = request.match_info["clip"]
        if link is None or pages.clips is None or not link.incident_id.isdigit() or not clip_id.isdigit():
            return not_found()
        rec = await pages.clips.get(int(clip_id))
        if rec is None or rec.incident_id != int(link.incident_id) or rec.state != "stored":
            return not_found()
        disposition = {"Content-Disposition": f'inline; filename="{rec.camera}-{rec.part}.mp4"'}
        response = await pages.clips.response(rec, {**_SECURITY_HEADERS, **disposition})
        if response is None:
            bind(log, incident=link.incident_id).warning("clip listed, file gone", extra={"clip": rec.id})
            return not_found()
        bind(log, incident=link.incident_id).info(
            "family clip fetched",
            extra={"party": link.target, "camera": rec.camera, "part": rec.part,
                   "range": request.headers.get(hdrs.RANGE, "")},
        )  # fmt: skip
        return response

    app.router.add_get(FAMILY_PATH + "static/{name}", asset)
    app.router.add_get(FAMILY_PATH + "{token}/clip/{clip}", clip)
    app.router.add_get(FAMILY_PATH + "{token}", page)
    app.router.add_get(FAMILY_PATH + "{token}/state", state)
    app.router.add_post(FAMILY_PATH + "{token}/revoke", revoke)


async def _revoke(pages: FamilyPages, revoker: Revoker, incident_id: int, party: str) -> RevokeResult:
    ilog = bind(log, incident=str(incident_id))
    # The request is logged before it is carried out: after a crash the log says it may have happened.
    await pages.incidents.append_events([EventRecord(incident_id, REVOKE_REQUESTED, _wall(), {"by": party})])
    ilog.info("family asked to revoke door codes", extra={"party": party})
    try:
        async with asyncio.timeout(pages.revoke_timeout_s):
            result = await revoker.revoke(incident_id)
    except TimeoutError:
        result = RevokeResult((), False, "timeout")
    except Exception as exc:
        ilog.exception("revoke failed")
        result = RevokeResult((), False, f"revoke failed: {exc}")
    detail = {"by": party, "cleared_slots": list(result.cleared_slots), "confirmed": result.confirmed,
              "error": result.error}  # fmt: skip
    await pages.incidents.append_events([EventRecord(incident_id, REVOKE_RESULT, _wall(), detail)])
    if result.confirmed and not result.error:
        ilog.info("door codes revoked", extra=detail)
    else:
        ilog.error("revoking door codes did not complete", extra=detail)
    return result


async def issue_family_link(links: LinkStore, incident_id: int | str, party_key: str, ttl_s: float,
                            *, now: datetime | None = None) -> str:  # fmt: skip
    """Store a family link for one contact (`party_key`, e.g. "contact:0") valid `ttl_s` from `now`;
    return its token (the SMS carries `family_url(public_url, token)`)."""
    expires = (now or _wall()) + timedelta(seconds=ttl_s)
    return await links.create(Link(str(incident_id), FAMILY_KIND, party_key, expires))
