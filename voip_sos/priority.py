"""CPU priority of serve's processes: the emergency path ahead of everything else on the host.

On a loaded host (or two cores shared with PostgreSQL, log shippers, renders) the scheduler decides
how long a press waits for its INVITE. serve runs at nice -5, its SOS listener and RTP media
processes, whose promises are milliseconds (a RECEIPT, a frame every 20 ms), at -10; Piper renders
below it all at an absolute nice (5 for an SOS render, 19 for pre-rendering). Raising priority
needs root or CAP_SYS_NICE: without it everything runs as started, and one log line says so.

`sos.realtime` (off by default, like Asterisk's `-p` and FreeSWITCH's `-rp`) puts serve in the
SCHED_RR real-time class at priority 10 and the listener and media processes at 20. Ordinary
processes then wait for them however busy they are, which is both its use and its danger:
- with one core taken by a CPU-bound neighbour (`yes > /dev/null`), bench.sos_e2e's press ->
  INVITE p99 was 31-58 ms at the nice values above (four runs) and 6-15 ms in real time (three);
- but a surge of 1000 presses keeps serve busy for seconds, and then nothing ordinary runs on its
  core: bench.sos_surge's STB agents (on the same host) saw their RECEIPTs at p99 280-600 ms
  instead of 6-7 ms. A database or PBX on the same host would starve the same way.
So: on for a host whose other work can wait (database and PBX elsewhere), off where they share it.
Renders never run in real time (`normal_policy`): spawned by serve, they would inherit its class.
"""

from __future__ import annotations

import logging
import os

__all__ = ["MEDIA_NICE", "MEDIA_RT", "SERVE_NICE", "SERVE_RT", "normal_policy", "raise_priority", "set_nice"]

logger = logging.getLogger(__name__)

SERVE_NICE = -5
MEDIA_NICE = -10  # the SOS listener and the RTP media process
SERVE_RT = 10
MEDIA_RT = 20  # above serve: a RECEIPT or an RTP frame is never queued behind incident work


def raise_priority(what: str, *, nice: int, realtime: int | None) -> str:
    """Put this thread, and the threads and processes it starts, ahead of the host's ordinary work:
    SCHED_RR at priority `realtime` (None: stay time-shared) and nice `nice` in any case.
    Returns what it got: "realtime", "nice" or "normal"."""
    got = "nice" if set_nice(nice, what) else "normal"
    if realtime is None:
        return got
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(realtime))
    except OSError as exc:
        logger.info(
            "real-time CPU priority refused (needs root or CAP_SYS_NICE, and a real-time budget)",
            extra={"part": what, "wanted": realtime, "error": str(exc), "running_as": got},
        )
        return got
    return "realtime"


def normal_policy() -> None:
    """Back to the ordinary time-shared policy (a render worker spawned by a real-time serve)."""
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


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
