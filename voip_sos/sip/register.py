"""Registration bookkeeping (RFC 3261 §10.2): state, refresh time, 423 handling and backoff.

Pure decisions, no messages: the agent asks what `expires` to request, tells it how an attempt
ended, and reads `next_attempt_at`. Backoff after failures doubles from `retry_base_s` up to
`retry_max_s` (RFC 5626 §4.5 uses the same shape; an emergency line wants a short base).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from voip_sos.errors import LocalProtocolError

__all__ = ["RegState", "Registration"]

log = logging.getLogger(__name__)

# Refresh this long before expiry, but never later than halfway (short grants, clock skew).
REFRESH_MARGIN_SECONDS = 30.0


class RegState(enum.Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"


R = RegState
_TRANSITIONS: dict[RegState, frozenset[RegState]] = {
    R.UNREGISTERED: frozenset({R.REGISTERING}),
    R.REGISTERING: frozenset({R.REGISTERED, R.FAILED, R.REGISTERING, R.UNREGISTERING}),
    R.REGISTERED: frozenset({R.REGISTERING, R.UNREGISTERING, R.FAILED}),
    R.FAILED: frozenset({R.REGISTERING, R.UNREGISTERED, R.UNREGISTERING}),
    R.UNREGISTERING: frozenset({R.UNREGISTERED, R.REGISTERING}),
}


@dataclass(slots=True)
class Registration:
    expires_s: int
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    state: RegState = RegState.UNREGISTERED
    requested_s: int = 0
    granted_s: int | None = None
    expires_at: float | None = None
    next_attempt_at: float | None = None
    failures: int = 0
    call_id: str = ""
    cseq: int = 0

    def _set_state(self, new: RegState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"registration: illegal move {self.state.name} -> {new.name}")
        if new is not self.state:
            log.info("registration: %s -> %s", self.state.value, new.value)
        self.state = new

    def start(self) -> int:
        """An attempt begins; returns the expires value to ask for."""
        self._set_state(RegState.REGISTERING)
        self.next_attempt_at = None
        if not self.requested_s:
            self.requested_s = self.expires_s
        return self.requested_s

    def start_unregister(self) -> None:
        self._set_state(RegState.UNREGISTERING)
        self.next_attempt_at = None

    def succeeded(self, granted_s: int, now: float) -> None:
        if self.state is RegState.UNREGISTERING or granted_s == 0:
            self._set_state(RegState.UNREGISTERED)
            self.granted_s = None
            self.expires_at = None
            self.next_attempt_at = None
            return
        self._set_state(RegState.REGISTERED)
        self.failures = 0
        self.granted_s = granted_s
        self.expires_at = now + granted_s
        self.next_attempt_at = now + max(granted_s / 2, granted_s - REFRESH_MARGIN_SECONDS)

    def too_brief(self, min_expires_s: int | None) -> bool:
        """423 Interval Too Brief (§10.3 step 7): True when a retry with Min-Expires makes sense."""
        if min_expires_s is None or min_expires_s <= self.requested_s:
            return False
        self.requested_s = min_expires_s
        return True

    def failed(self, now: float) -> float:
        """The attempt failed; returns when the next one is due."""
        if self.state is RegState.UNREGISTERING:
            self._set_state(RegState.UNREGISTERED)
            self.next_attempt_at = None
            return now
        self._set_state(RegState.FAILED)
        delay = min(self.retry_max_s, self.retry_base_s * (2**self.failures))
        self.failures += 1
        self.next_attempt_at = now + delay
        return self.next_attempt_at

    def stop(self) -> None:
        """No further attempts (after unregistering or on shutdown)."""
        self.next_attempt_at = None
