"""Garbage-collector pauses: kept short on the paths that promise milliseconds, and measured.

CPython's cyclic collector runs with the GIL held, so a collection stops every thread of the
process -- the RTP pacing thread included -- for as long as it takes, and a full (generation 2)
collection walks every tracked object alive: SQLAlchemy's metadata and compiled caches, the
directory, a thousand live calls. `settle()` is called once a process has started: it collects
once and freezes everything then alive into the permanent generation, which later collections
never walk, so a collection during a surge costs what the surge created and no more.

`GcWatch` times every collection (through `gc.callbacks`) so the pauses can be seen: the longest
goes to the log, all of them to a histogram when one is given.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["GcWatch", "settle"]

logger = logging.getLogger(__name__)

# A collection longer than this is worth a log line: it is a RECEIPT or an RTP frame held up.
LONG_PAUSE_S = 0.010


def settle() -> None:
    """Freeze what start-up left alive so that later collections never walk it again."""
    gc.collect()
    gc.freeze()


class GcWatch:
    """Times each collection of this process; `pauses` holds (generation, seconds) until read."""

    def __init__(self, observe: Callable[[int, float], None] | None = None) -> None:
        self._observe = observe
        self._started = 0.0
        self.longest_s = 0.0
        self.count = 0
        self.pauses: list[tuple[int, float]] = []

    def install(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def take(self) -> list[tuple[int, float]]:
        pauses, self.pauses = self.pauses, []
        return pauses

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = int(info.get("generation", 0))
        self.count += 1
        self.longest_s = max(self.longest_s, took)
        if len(self.pauses) < 100_000:  # bounded if nobody reads them
            self.pauses.append((generation, took))
        if self._observe is not None:
            self._observe(generation, took)
        if took >= LONG_PAUSE_S:
            logger.info(
                "long garbage-collector pause",
                extra={
                    "generation": generation,
                    "pause_ms": round(took * 1000, 2),
                    "collected": info.get("collected"),
                },
            )
