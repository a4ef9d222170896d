"""CPU priority of serve's processes: the emergency path ahead of everything else on the host.

On a loaded host (or two cores shared with PostgreSQL, log shippers, renders) the scheduler decides
how long a press waits for its INVITE. `serve` runs at nice -5; its SOS listener and RTP media
processes, whose promises are milliseconds (a RECEIPT, a frame every 20 ms), at -10; Piper renders
below it all (an SOS render at 5, pre-rendering at 19). Raising priority needs root or
CAP_SYS_NICE: without it everything runs at the nice it was started with, and one log line says so.
"""

from __future__ import annotations

import logging
import os

__all__ = ["MEDIA_NICE", "SERVE_NICE", "set_nice"]

logger = logging.getLogger(__name__)

SERVE_NICE = -5
MEDIA_NICE = -10  # the SOS listener and the RTP media process


def set_nice(nice: int, what: str) -> bool:
    """Run this process at `nice` (absolute, not relative to the parent's); False if not permitted."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        logger.info(
            "CPU priority not raised (needs root or CAP_SYS_NICE)",
            extra={
                "part": what,
                "nice": os.getpriority(os.PRIO_PROCESS, 0),
                "wanted": nice,
                "error": str(exc),
            },
        )
        return False
    return True
