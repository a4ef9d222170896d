"""The backend's HTTP server: voice links from SMS, `/healthz`, `/metrics` (aiohttp).

Nothing is reachable without a valid token except `/healthz` and `/metrics`; those two can be served
on a separate operator-only address instead (`http.metrics_listen`). Every other path, a wrong or
expired token, and a voice file that is gone all answer the same plain 404, so the server tells a
prober nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from voip_sos.web.links import LinkStore

__all__ = ["build_app", "build_operator_app"]

log = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
HealthCheck = Callable[[], Awaitable[dict[str, object]]]


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found\n")


def _now() -> datetime:
    return datetime.now(UTC)


def build_app(links: LinkStore, *, registry: CollectorRegistry | None = None,
              health: HealthCheck | None = None) -> web.Application:  # fmt: skip
    """The public application; with `registry`/`health` it also serves `/metrics` and `/healthz`."""

    async def voice(request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"].removesuffix(".wav")
        if not _TOKEN_RE.match(token):
            return _not_found()
        link = await links.resolve(token, _now())
        if link is None or link.kind != "voice":
            return _not_found()
        # FileResponse answers Range requests (206), sets Content-Length and Accept-Ranges, and
        # turns a missing file (cache evicted) into 404 without blocking the loop.
        return web.FileResponse(
            Path(link.target), headers={"Content-Type": "audio/wav", "Cache-Control": "private, no-store"}
        )

    async def fallback(request: web.Request) -> web.Response:
        return _not_found()

    app = web.Application()
    app.router.add_get("/v/{token}", voice)
    if registry is not None or health is not None:
        _add_operator_routes(app, registry, health)
    app.router.add_route("*", "/{tail:.*}", fallback)
    return app


def build_operator_app(registry: CollectorRegistry | None, health: HealthCheck | None) -> web.Application:
    """`/healthz` and `/metrics` alone, for a separate operator address."""
    app = web.Application()
    _add_operator_routes(app, registry, health)
    return app


def _add_operator_routes(app: web.Application, registry: CollectorRegistry | None,
                         health: HealthCheck | None) -> None:  # fmt: skip
    async def healthz(request: web.Request) -> web.Response:
        body = await health() if health is not None else {"status": "ok"}
        status = 200 if body.get("status") == "ok" else 503
        return web.json_response(body, status=status)

    async def metrics(request: web.Request) -> web.Response:
        if registry is None:
            return _not_found()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
