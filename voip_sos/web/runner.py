"""Starting and stopping the HTTP server(s) on the configured addresses (aiohttp AppRunner/TCPSite).

One site on `http.listen` serves the voice links (and `/healthz`, `/metrics` unless
`http.metrics_listen` is set); with `http.metrics_listen` a second, operator-only site serves those
two. Port 0 binds a free port; the bound addresses are reported so tests and logs show the truth.
While running, expired links are deleted from the store now and then (they already answer 404;
this only keeps the table small).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from voip_sos.config import HostPort, HttpConfig
from voip_sos.web.family import FamilyPages
from voip_sos.web.links import LinkStore
from voip_sos.web.server import HealthCheck, build_app, build_operator_app

if TYPE_CHECKING:
    from voip_sos.clips.archive import ClipArchive

__all__ = ["LINK_PURGE_INTERVAL_S", "SHUTDOWN_TIMEOUT_S", "HttpServers", "start_http"]

log = logging.getLogger(__name__)

# A phone still downloading the WAV at shutdown gets this long to finish.
SHUTDOWN_TIMEOUT_S = 5.0
LINK_PURGE_INTERVAL_S = 3600.0


@dataclass(slots=True)
class HttpServers:
    """The running HTTP server(s) and the addresses they are bound to."""

    public: HostPort
    operator: HostPort | None
    """The operator-only address, or None when `/healthz` and `/metrics` are served on `public`."""
    _runners: list[web.AppRunner]
    _purger: asyncio.Task[None] | None = field(default=None)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self) -> None:
        """Stop purging and listening, let requests in progress finish (bounded), release the ports."""
        self._stop.set()
        if self._purger is not None:
            # A purge in progress finishes its transaction (cancelling it would leave the database
            # driver's worker answering a loop that may be gone); a stuck one is cancelled.
            await asyncio.wait({self._purger}, timeout=SHUTDOWN_TIMEOUT_S)
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        while self._runners:
            await self._runners.pop().cleanup()


async def _purge_until(stop: asyncio.Event, links: LinkStore, interval_s: float,
                       clips: ClipArchive | None = None) -> None:  # fmt: skip
    while not stop.is_set():
        try:
            purged = await links.purge_expired(datetime.now(UTC))
            if purged:
                log.info("expired links purged", extra={"links": purged})
        except Exception:
            # The database may be away for a moment; links still expire by their time on lookup.
            log.exception("purging expired links failed")
        if clips is not None:
            try:
                await clips.purge(datetime.now(UTC))  # logs each clip it deletes
            except Exception:
                log.exception("purging old clips failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def _serve(app: web.Application, where: HostPort) -> tuple[web.AppRunner, HostPort]:
    # access_log=None: aiohttp's access log prints the request path, i.e. the token in clear.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, where.host, where.port)
        await site.start()
        bound = next(a for a in runner.addresses if isinstance(a, tuple))
    except BaseException:
        await runner.cleanup()
        raise
    return runner, HostPort(where.host, int(bound[1]))


async def start_http(cfg: HttpConfig, links: LinkStore, registry: CollectorRegistry | None,
                     health: HealthCheck | None, *,
                     purge_interval_s: float = LINK_PURGE_INTERVAL_S,
                     family: FamilyPages | None = None,
                     clips: ClipArchive | None = None) -> HttpServers:  # fmt: skip
    """Bind and start the link server (and the operator site if configured), and the purge of
    expired links; raise OSError if an address cannot be bound, with nothing left listening."""
    runners: list[web.AppRunner] = []
    servers = HttpServers(cfg.listen, None, runners)
    try:
        if cfg.metrics_listen is None:
            runner, servers.public = await _serve(
                build_app(links, registry=registry, health=health, family=family, clips=clips), cfg.listen
            )
            runners.append(runner)
        else:
            runner, servers.public = await _serve(build_app(links, family=family, clips=clips), cfg.listen)
            runners.append(runner)
            runner, servers.operator = await _serve(build_operator_app(registry, health), cfg.metrics_listen)
            runners.append(runner)
    except BaseException:
        await servers.close()
        raise
    servers._purger = asyncio.create_task(
        _purge_until(servers._stop, links, purge_interval_s, clips), name="link-purge"
    )
    log.info(
        "http listening",
        extra={"listen": str(servers.public), "operator": str(servers.operator or servers.public)},
    )
    return servers
