"""The retransmission schedule shared by the STB agent (requests) and the listener (STATUS).

A try is sent at once, the first retry 250 ms later, each interval doubling up to 4 s, until the
give-up time (120 s for requests). Deadlines only: the caller owns the clock (STYLE.md §2).
"""

from __future__ import annotations

__all__ = ["FIRST_RETRY_S", "GIVE_UP_S", "MAX_INTERVAL_S", "RetrySchedule"]

FIRST_RETRY_S = 0.25
MAX_INTERVAL_S = 4.0
GIVE_UP_S = 120.0


class RetrySchedule:
    """Intervals 0.25, 0.5, 1, 2, 4, 4, … seconds from `start`, ending at `start + give_up_s`."""

    def __init__(
        self,
        start: float,
        *,
        first_s: float = FIRST_RETRY_S,
        max_s: float = MAX_INTERVAL_S,
        give_up_s: float = GIVE_UP_S,
    ) -> None:
        self.start = start
        self.give_up_at = start + give_up_s
        self._interval = first_s
        self._max = max_s

    def next_delay(self, now: float) -> float | None:
        """Seconds from `now` (a try just sent) to the next try; None once the give-up time is reached.

        The last delay is shortened so the caller wakes exactly at the give-up time, then gets None.
        """
        if now >= self.give_up_at:
            return None
        delay = min(self._interval, self.give_up_at - now)
        self._interval = min(self._interval * 2, self._max)
        return delay
