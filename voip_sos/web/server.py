"""The backend's HTTP server: voice links from SMS, `/healthz`, `/metrics` (aiohttp).

Nothing is reachable without a valid token except `/healthz` and `/metrics`; those two can be served
on a separate operator-only address instead (`http.metrics_listen`), and then the public app has no
route to them at all. Every other path, any method but GET/HEAD, a wrong or expired token, and a
voice file that is gone all answer the same plain 404, and no `Server` header names the software,
so the server tells a prober nothing. Tokens never reach a log line: aiohttp's access log (which
prints the request path) is off, and the voice handler logs the incident id instead.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from voip_sos.logs import bind
from voip_sos.web.family import FamilyPages, add_family_routes
from voip_sos.web.links import VOICE_PATH, LinkStore

if TYPE_CHECKING:
    from voip_sos.clips.archive import ClipArchive

__all__ = ["WAV_CONTENT_TYPE", "HealthCheck", "build_app", "build_operator_app"]

log = logging.getLogger(__name__)

WAV_CONTENT_TYPE = "audio/wav"
# new_token(): 16 bytes in unpadded URL-safe base64 are exactly 22 characters.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
NOT_FOUND_TEXT = "This link does not exist or has expired.\n"

HealthCheck = Callable[[], Awaitable[dict[str, object]]]
"""Returns the `/healthz` body; `{"status": "ok", ...}` answers 200, any other status 503."""


# A health check may report datetimes or addresses; they are shown, not refused.
_dumps = functools.partial(json.dumps, default=str)


def _not_found() -> web.Response:
    return web.Response(status=404, text=NOT_FOUND_TEXT)


def _now() -> datetime:
    return datetime.now(UTC)


async def _drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.popall(hdrs.SERVER, None)


def _new_app() -> web.Application:
    app = web.Application()
    app.on_response_prepare.append(_drop_server_header)
    return app


async def _fallback(request: web.Request) -> web.Response:
    return _not_found()


def build_app(links: LinkStore, *, registry: CollectorRegistry | None = None,
              health: HealthCheck | None = None,
              now: Callable[[], datetime] = _now,
              family: FamilyPages | None = None,
              clips: ClipArchive | None = None) -> web.Application:  # fmt: skip
    """The public application; with `registry`/`health` it also serves `/metrics` and `/healthz`,
    with `family` the family pages (`/f/…`, voip_sos/web/family.py), with `clips` the hubs' clip
    uploads (`/hub/v1/clips/…`, voip_sos/clips/upload.py)."""

    async def voice(request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"].removesuffix(".wav")
        if not _TOKEN_RE.match(token):
            return _not_found()
        link = await links.resolve(token, now())
        if link is None or link.kind != "voice":
            return _not_found()
        path = Path(link.target)
        # Checked here (off the loop) so a WAV that is gone gets the same 404 as a wrong token;
        # FileResponse would answer an empty 404 of its own.
        if not await asyncio.to_thread(path.is_file):
            bind(log, incident=link.incident_id).warning("voice link valid but its file is gone")
            return _not_found()
        bind(log, incident=link.incident_id).info(
            "voice link fetched", extra={"range": request.headers.get(hdrs.RANGE, "")}
        )
        # FileResponse answers Range and If-Range (RFC 9110 §14: 206 with the slice, 416 outside
        # the file), sets Content-Length, Accept-Ranges and ETag, and reads off the loop.
        return web.FileResponse(
            path,
            headers={
                hdrs.CONTENT_TYPE: WAV_CONTENT_TYPE,
                hdrs.CONTENT_DISPOSITION: 'inline; filename="sos.wav"',
                # The link is personal and expires: no shared cache may keep it.
                hdrs.CACHE_CONTROL: "private, no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    app = _new_app()
    app.router.add_get(VOICE_PATH + "{token}", voice)
    if family is not None:
        add_family_routes(app, family, links, lambda t: bool(_TOKEN_RE.match(t)), _not_found, now)
    if clips is not None:
        from voip_sos.clips.upload import add_clip_upload_routes

        add_clip_upload_routes(app, clips, links, now)
    if registry is not None or health is not None:
        _add_operator_routes(app, registry, health)
    app.router.add_route("*", "/{tail:.*}", _fallback)
    return app


def build_operator_app(registry: CollectorRegistry | None, health: HealthCheck | None) -> web.Application:
    """`/healthz` and `/metrics` alone, for a separate operator address."""
    app = _new_app()
    _add_operator_routes(app, registry, health)
    app.router.add_route("*", "/{tail:.*}", _fallback)
    return app


def _add_operator_routes(app: web.Application, registry: CollectorRegistry | None,
                         health: HealthCheck | None) -> None:  # fmt: skip
    async def healthz(request: web.Request) -> web.Response:
        try:
            body = await health() if health is not None else {"status": "ok"}
        except Exception:
            # A failing check is an unhealthy service, not a 500 that a load balancer may retry.
            log.exception("health check failed")
            body = {"status": "error", "detail": "health check failed"}
        status = 200 if body.get("status") == "ok" else 503
        return web.json_response(body, status=status, headers={hdrs.CACHE_CONTROL: "no-store"}, dumps=_dumps)

    async def metrics(request: web.Request) -> web.Response:
        if registry is None:
            return _not_found()
        return web.Response(body=generate_latest(registry), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
