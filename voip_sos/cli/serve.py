"""`voip-sos serve`: run the backend (the SOS listener now; the SIP UA, HTTP and prompt worker join later).

SIGTERM or SIGINT stops it cleanly: no new datagrams are taken, every request already accepted is
recorded and answered, the incident log is flushed, then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from voip_sos.aio.sos_listener import SosListenerProtocol, start_sos_listener
from voip_sos.config import Config, SosConfig
from voip_sos.directory import Directory
from voip_sos.errors import ConfigError
from voip_sos.incidents.store import IncidentStore, Recorded, RequestRecord
from voip_sos.sos.listener import ListenerSettings
from voip_sos.sos.wire import StatusCode

__all__ = ["listener_settings", "register", "run_serve", "sos_problems"]

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the backend: the SOS listener (SIGTERM stops it cleanly)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, cfg: Config) -> int:
    return asyncio.run(run_serve(cfg))


def listener_settings(sos: SosConfig) -> ListenerSettings:
    return ListenerSettings(
        trust_carried_ip=sos.trust_carried_ip,
        operator_key=bytes.fromhex(sos.operator_key) if sos.operator_key else None,
        check_clock=sos.check_clock,
        clock_window_s=sos.clock_window_s,
        rate_per_s=sos.rate_per_s,
        burst=sos.burst,
        max_pending=sos.max_pending,
    )


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


def status_hook(proto: SosListenerProtocol) -> Any:
    """Until the incidents runner lands: tell the TV the truth that is known here."""

    def hook(rec: RequestRecord, res: Recorded) -> None:
        if res.incident_id is None or res.again:
            return
        if res.opened:
            proto.send_status(res.incident_id, rec.stb_ip, StatusCode.NOBODY_REACHED)
        elif res.closed:
            proto.send_status(res.incident_id, rec.stb_ip, StatusCode.CLOSED, "cancelled")

    return hook


async def run_serve(cfg: Config, stop: asyncio.Event | None = None) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    directory = await Directory.open(cfg.directory.url)
    try:
        problems = await sos_problems(cfg, directory)
        if problems:
            raise ConfigError(problems)
        store = IncidentStore(directory.engine)
        hooks: list[Any] = []

        def on_recorded(rec: RequestRecord, res: Recorded) -> None:
            for h in hooks:
                h(rec, res)

        listen = cfg.sos.listen
        proto = await start_sos_listener(
            listen.host, listen.port, listener_settings(cfg.sos), directory, store, on_recorded
        )
        hooks.append(status_hook(proto))
        host, port = proto.address
        logger.info("SOS listener ready", extra={"listen": f"{host}:{port}"})
        try:
            await stop.wait()
        finally:
            logger.info("stopping: finishing requests in flight")
            await proto.close()
            await store.aclose()
            logger.info("stopped", extra={"counters": dict(proto.core.counters)})
    finally:
        await directory.close()
    return 0
