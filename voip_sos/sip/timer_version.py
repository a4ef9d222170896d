"""A counter that moves whenever a SIP timer moves, in any transaction or call.

The agent is asked for its earliest deadline after every datagram (and every batch of them); with
300 calls and 600 transactions up, scanning them all each time was the largest single item of a
surge's SIP loop. It keeps the earliest deadline it found and scans again only when this counter
has moved since (or after its timers fired, when deadlines may have gone with what ended).
"""

from __future__ import annotations

__all__ = ["bump", "version"]

version = 0


def bump() -> None:
    global version
    version += 1
