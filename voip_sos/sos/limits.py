"""Per-source limits of the SOS listener: token buckets, and drop logging at most once per minute.

Both are bounded: they remember at most `max_sources` addresses, forgetting the least recently seen
first, so a sender cycling through addresses cannot grow them without end.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["LOG_INTERVAL_S", "LogThrottle", "TokenBuckets"]

LOG_INTERVAL_S = 60.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One bucket per source: `rate_per_s` tokens a second, at most `burst` banked."""

    def __init__(self, rate_per_s: float, burst: int, max_sources: int) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._max = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, src: str, now: float) -> bool:
        """Spend one token of `src`'s bucket; False when it is empty."""
        b = self._buckets.get(src)
        if b is None:
            b = _Bucket(self._burst, now)
            self._buckets[src] = b
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            b.tokens = min(self._burst, b.tokens + (now - b.at) * self._rate)
            b.at = now
            self._buckets.move_to_end(src)
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True


class LogThrottle:
    """Says whether to log a source now, and how many of its lines were held back since."""

    def __init__(self, max_sources: int, interval_s: float = LOG_INTERVAL_S) -> None:
        self._interval = interval_s
        self._max = max_sources
        self._logged: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def check(self, src: str, now: float) -> int | None:
        """None: stay quiet (counted as suppressed). Otherwise: log now, with this many suppressed."""
        last = self._logged.get(src)
        if last is not None and now - last[0] < self._interval:
            self._logged[src] = (last[0], last[1] + 1)
            return None
        self._logged[src] = (now, 0)
        self._logged.move_to_end(src)
        while len(self._logged) > self._max:
            self._logged.popitem(last=False)
        return last[1] if last is not None else 0
