"""`voip-sos serve`: run the backend (SOS listener, SIP user agent, voice, HTTP, incidents).

SIGTERM or SIGINT stops it cleanly: no new datagrams are taken, every request already accepted is
recorded and answered, the incident log is flushed, then the process exits 0. Incidents still open
stay open in the database; the next `serve` takes them over.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from voip_sos.config import Config
from voip_sos.service import listener_settings, run_backend, sos_problems

__all__ = ["listener_settings", "register", "sos_problems"]


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the backend (SIGTERM stops it cleanly)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, cfg: Config) -> int:
    return asyncio.run(run_backend(cfg))
