"""File descriptors: room for every call's sockets made once, at start-up, not during a surge.

Linux keeps a process's open files in a table that it doubles when a new descriptor does not fit
(64, 128, 256, ...). In a process with more than one thread (ours have SQLite, executor and
OpenBLAS threads) growing it waits for an RCU grace period (`expand_fdtable` ->
`synchronize_rcu`), about 10 ms here, and the thread that opened the socket stands still for it.
In the media process that thread is the one sending every call's RTP: during a surge, the calls
answered while the table grew from 64 to 128 to 256 descriptors heard their first packet 10-15 ms
late (bench.sos_e2e, answer -> RTP p99 10-17 ms; 2-6 ms with the table grown at start).

`reserve()` raises the soft RLIMIT_NOFILE to what the RTP port range needs (as Asterisk's
`maxfiles` does) and grows the table to that size at once, when nobody is waiting.
"""

from __future__ import annotations

import logging
import os
import resource

from voip_sos.config_values import PortRange

__all__ = ["fd_table_size", "for_ports", "reserve"]

logger = logging.getLogger(__name__)

# Beyond the RTP sockets: the SIP socket, the database, the media link, logs, HTTP clients.
SPARE = 256


def for_ports(ports: PortRange) -> int:
    """Descriptors a process needs when it may hold a socket for every port of `ports`."""
    return ports.last - ports.first + 1 + SPARE


def reserve(count: int, what: str) -> int:
    """Make room for `count` open descriptors in this process; returns the room made.

    Less than `count` only when the hard limit is lower; that is logged as a WARNING, because calls
    beyond it would fail to get their media sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = count if hard == resource.RLIM_INFINITY else min(count, hard)
    if soft != resource.RLIM_INFINITY and soft < room:
        resource.setrlimit(resource.RLIMIT_NOFILE, (room, hard))
    if room < count:
        logger.warning(
            "open-files hard limit below what the RTP port range needs",
            extra={"part": what, "needed": count, "hard_limit": hard},
        )
    # dup2 onto the highest descriptor wanted makes the kernel grow the table to hold it; closing
    # it again leaves the table at that size (it never shrinks).
    base = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = fd_table_size()
        if 0 < size < room:  # every open descriptor is below `size`: room - 1 is free
            os.dup2(base, room - 1, inheritable=False)
            os.close(room - 1)
    finally:
        os.close(base)
    return room


def fd_table_size(pid: int | str = "self") -> int:
    """The size of a process's descriptor table (`FDSize` in /proc/PID/status); 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("FDSize:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
