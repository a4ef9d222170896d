"""`voip-sos serve` put together: directory, SOS listener, SIP user agent, voice, HTTP, incidents.

Start order follows what an SOS needs: the directory and incident store first, then the voice
service (so a message can render the moment a call goes out), the SIP user agent, the HTTP link
server, the incident runner (which takes over incidents left open by an earlier process), and only
then the SOS listener, so no request is accepted before everything that acts on it is ready. Stop
is the reverse: no new requests, then everything in flight is recorded and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from voip_sos import fd_table, gc_pauses
from voip_sos.aio.listener_process import ListenerProcess, listener_settings
from voip_sos.aio.media_process import ProcessRtpEngine
from voip_sos.aio.user_agent import IncomingCallRequest, UserAgent
from voip_sos.clips.archive import open_clip_archive
from voip_sos.clips.tokens import ClipGrants
from voip_sos.config import Config
from voip_sos.directory import Directory
from voip_sos.errors import ConfigError
from voip_sos.gc_pauses import GcWatch
from voip_sos.incidents.hub_bridge import open_hub_bridge
from voip_sos.incidents.recording import Recorded, RequestRecord
from voip_sos.incidents.runner import IncidentRunner
from voip_sos.incidents.store import IncidentStore
from voip_sos.metrics import Metrics
from voip_sos.notify.sip_message import SipMessageTransport
from voip_sos.priority import SERVE_NICE, SERVE_RT, raise_priority
from voip_sos.voice.service import PromptService
from voip_sos.web.family import FamilyPages
from voip_sos.web.link_store import DbLinkStore
from voip_sos.web.runner import start_http

__all__ = ["listener_settings", "run_backend", "sos_problems"]

logger = logging.getLogger(__name__)

# How often the registration state, the render queue and the reject counters are looked at.
WATCH_INTERVAL_S = 5.0
# Registration lost for longer than this is an ERROR (once per outage).
REGISTRATION_LOST_ERROR_S = 60.0
SWITCH_INTERVAL_S = 0.001
# How often subscribers changed by another process (CLI, import) are queued for pre-rendering.
PRERENDER_SWEEP_S = 60.0


async def sos_problems(cfg: Config, directory: Directory) -> list[str]:
    """What the SOS settings cannot be run with, given the directory (also for `config check`)."""
    if not cfg.sos.trust_carried_ip:
        return []
    total, keyless = await directory.stbs_without_secret(limit=5)
    if not total:
        return []
    shown = ", ".join(keyless) + (f" and {total - len(keyless)} more" if total > len(keyless) else "")
    return [
        "config error: sos.trust_carried_ip: refused while STBs have no secret of their own "
        f"(the HMAC would be the only proof and the operator key is shared): {shown}"
    ]


async def _every(interval_s: float, fn: Callable[[], Awaitable[None]], what: str) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await fn()
        except Exception:
            logger.exception("periodic task failed", extra={"task": what})


class _Watch:
    """Registration state, render queue and SOS reject counters -> metrics and the log."""

    def __init__(
        self,
        cfg: Config,
        ua: UserAgent,
        metrics: Metrics,
        prompts: PromptService,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._cfg, self._ua, self._metrics, self._prompts = cfg, ua, metrics, prompts
        self._clock = clock
        self.listener: ListenerProcess | None = None
        self._lost_since: float | None = None
        self._reported = False

    @property
    def registered(self) -> bool:
        reg = self._ua.registration
        return self._cfg.sip.registrar is None or (reg is not None and reg.ok)

    async def tick(self) -> None:
        now = self._clock() if self._clock is not None else asyncio.get_running_loop().time()
        ok = self.registered
        self._metrics.registration(ok)
        if ok:
            if self._reported:
                logger.info("PBX registration restored")
            self._lost_since, self._reported = None, False
        else:
            self._lost_since = self._lost_since if self._lost_since is not None else now
            if not self._reported and now - self._lost_since > REGISTRATION_LOST_ERROR_S:
                self._reported = True
                reg = self._ua.registration
                logger.error(
                    "PBX registration lost for more than a minute",
                    extra={"state": reg.state if reg else "none", "status": reg.status if reg else None},
                )
        self._metrics.render_queue(self._prompts.queue_length())
        if self.listener is not None:
            self._metrics.sync_sos_rejected(self.listener.counters)

    async def health(self) -> dict[str, object]:
        reg = self._ua.registration
        return {
            "status": "ok" if self.registered and self.media_alive else "degraded",
            "registration": reg.state if reg else ("none" if self._cfg.sip.registrar is None else "pending"),
            "sos_listener": self.listener is not None and self.listener.alive,
            "media_process": self.media_alive,
        }

    @property
    def media_alive(self) -> bool:
        engine = self._ua.engine
        return not isinstance(engine, ProcessRtpEngine) or engine.alive


async def run_backend(cfg: Config, stop: asyncio.Event | None = None) -> int:
    """Run until `stop` is set (or SIGTERM/SIGINT); 0 on a clean stop."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # The database writer and the sqlite threads take the GIL back after every SQLite call; with
    # the default 5 ms switch interval a busy event loop held them (and SQLite's write lock, which
    # the SOS listener process waits for) 5 ms per call. 1 ms bounds that wait.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    cpu = raise_priority("serve", nice=SERVE_NICE, realtime=SERVE_RT if cfg.sos.realtime else None)
    # serve binds every call's port pair before handing it to the media process.
    fd_table.reserve(fd_table.for_ports(cfg.rtp.ports), "serve")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        directory = await Directory.open(cfg.directory.url)
        stack.push_async_callback(directory.close)
        problems = await sos_problems(cfg, directory)
        if problems:
            raise ConfigError(problems)
        store = IncidentStore(directory.engine)
        stack.push_async_callback(store.aclose)

        prompts = PromptService(cfg)
        await prompts.start()
        stack.push_async_callback(prompts.close)

        runner_ref: list[IncidentRunner] = []

        async def incoming(req: IncomingCallRequest) -> None:
            if not runner_ref:
                req.reject(503)
                return
            await runner_ref[0].on_incoming(req)

        ua = UserAgent(cfg, on_incoming=incoming, media="process")
        await ua.start()
        stack.push_async_callback(ua.close)
        if cfg.sip.registrar is not None:
            reg = await ua.register()
            log = logger.info if reg.ok else logger.error
            log("PBX registration", extra={"state": reg.state, "status": reg.status, "reason": reg.reason})

        metrics = Metrics()
        watch = _Watch(cfg, ua, metrics, prompts)
        links = DbLinkStore(directory.engine, write=store.write, write_statement=store.write_statement)
        # Home hubs (hub_link.broker set): context out, codes in, the family's revoke.
        hubs = await open_hub_bridge(cfg.hub_link, directory, store)
        if hubs is not None:
            stack.push_async_callback(hubs.close)
        clips = open_clip_archive(cfg.http, directory.engine, store, store.write)  # camera clips (F9)
        if hubs is not None:
            hubs.clip_grant = ClipGrants(links, cfg.http.public_url, cfg.http.clip_upload_ttl_s)
        family = FamilyPages(store, revoker=hubs, codes=hubs, public_url=cfg.http.public_url, clips=clips)
        http = await start_http(cfg.http, links, metrics.registry, watch.health, family=family, clips=clips)
        stack.push_async_callback(http.close)

        listener_ref: list[ListenerProcess] = []

        def send_status(incident_id: int, ip: str, status: Any, detail: str | None = None) -> int:
            if listener_ref:
                listener_ref[0].send_status(incident_id, ip, status, detail)
            return 0

        runner = IncidentRunner(
            cfg, directory, store, ua, prompts, SipMessageTransport(ua), send_status, links, metrics
        )
        runner_ref.append(runner)
        stack.push_async_callback(runner.close)

        def on_recorded(rec: RequestRecord, res: Recorded) -> None:
            # At once, in the callback that read it: the INVITEs go out before anything else runs.
            later = runner.recorded_now(rec, res)
            if later is not None:
                task = asyncio.ensure_future(later)
                background.add(task)
                task.add_done_callback(background.discard)
            if hubs is not None:
                hubs.on_recorded(rec, res)

        background: set[asyncio.Task[Any]] = set()
        # The listener runs in a process of its own (voip_sos/aio/listener_process.py): a RECEIPT
        # must not wait behind the calls, SMS and renders of the incidents already started.
        listener = ListenerProcess(
            cfg, on_recorded, metrics.sos_receipt, on_restart=lambda: runner.resume_open(after_crash=False),
            on_gc_pause=lambda gen, s: metrics.gc_pause("listener", gen, s),
        )  # fmt: skip
        await listener.start()
        listener_ref.append(listener)
        watch.listener = listener
        host, port = listener.address
        logger.info("SOS listener ready", extra={"listen": f"{host}:{port}", "pid": listener.pid})
        stack.push_async_callback(listener.close)
        resumed = await runner.resume_open()
        if resumed:
            logger.info("incidents resumed after restart", extra={"incidents": resumed})
        runner.start_holding()
        if hubs is not None:
            await hubs.start(runner)

        tasks = [
            asyncio.create_task(_every(WATCH_INTERVAL_S, watch.tick, "watch")),
            asyncio.create_task(_prerender(prompts, directory), name="prerender"),
        ]
        await watch.tick()
        # A collection stops every thread, RTP pacing included: what start-up built (SQLAlchemy's
        # tables and caches, the UA, the HTTP app) is frozen so that no collection walks it again.
        gc_pauses.settle()
        gc_watch = GcWatch(lambda gen, s: metrics.gc_pause("serve", gen, s)).install()
        stack.callback(gc_watch.uninstall)
        stack.callback(gc.unfreeze)
        logger.info(
            "voip-sos ready",
            extra={
                "sos": f"{host}:{port}",
                "sip": str(cfg.sip.listen),
                "http": str(http.public),
                "backend_id": runner.runner_id,
                "cpu_priority": cpu,
            },
        )
        try:
            await stop.wait()
        finally:
            logger.info("stopping: finishing requests in flight")
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            logger.info("stopped", extra={"counters": dict(listener.counters)})
    return 0


async def _prerender(prompts: PromptService, directory: Directory) -> None:
    """Keep messages rendered before anyone presses: the whole directory once at start (as far as the
    cache bound allows), then every minute whatever another process (CLI, import) changed since."""
    since = datetime.now(UTC)
    try:
        queued = await prompts.sweep(directory)
        logger.info("pre-render sweep done", extra={"queued": queued})
    except Exception:
        logger.exception("pre-render sweep failed")
    while True:
        await asyncio.sleep(PRERENDER_SWEEP_S)
        now = datetime.now(UTC)
        try:
            # A little overlap: a change committed while the last look ran is not missed.
            changed = await directory.updated_since(since - timedelta(seconds=PRERENDER_SWEEP_S))
            await prompts.queue_missing(changed)
            since = now
        except Exception:
            logger.exception("pre-render of changed subscribers failed")
