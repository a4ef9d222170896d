"""The hub's temporary door codes (sans-IO): which reserved lock slots hold which code, until when.

Only the slots reserved in `lock.slots` are ever written or cleared, so the owner's permanent codes
are untouchable by construction. A code is recorded *before* it is sent to the lock (write-ahead):
if the hub dies between the two, the slot is still known and is cleared at expiry after the
restart. Time here is the wall clock (seconds since 1970), passed in as `now`, because expiries are
persisted and must mean the same thing after a restart; monotonic time would not.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

from voip_sos.errors import LocalProtocolError

__all__ = ["CodeState", "SlotTable", "TempCode", "new_code"]


class CodeState(enum.Enum):
    """Where a temporary code stands on the lock."""

    SETTING = "setting"
    """Sent to the lock, not yet confirmed (or the hub stopped before it was)."""
    ACTIVE = "active"
    """The lock confirmed it holds the code."""
    FAILED = "failed"
    """The lock never confirmed it within the deadline; it is cleared as soon as possible."""


@dataclass(frozen=True, slots=True)
class TempCode:
    """One temporary code in one reserved slot."""

    slot: int
    """The lock's user slot."""
    code: str
    """The digits."""
    created_at: float
    """Wall clock when it was issued."""
    expires_at: float
    """Wall clock when it stops being valid (hub.code_ttl_s after issue)."""
    clear_at: float
    """Wall clock of the next attempt to clear it (the expiry, or sooner/later after a failure)."""
    state: CodeState
    """Lock confirmation state."""
    request: str = ""
    """Hex id of the instruction it was issued for."""


def new_code(length: int) -> str:
    """A uniformly random decimal code (secrets, not random: it opens a door)."""
    if not 4 <= length <= 12:
        raise LocalProtocolError(f"code length must be 4..12 digits, got {length}")
    return "".join(secrets.choice("0123456789") for _ in range(length))


class SlotTable:
    """Temporary codes by slot, over the reserved `slots`."""

    def __init__(self, slots: tuple[int, ...], code_length: int = 6) -> None:
        if not slots:
            raise LocalProtocolError("no lock slots are reserved for temporary codes")
        self.slots = tuple(slots)
        self.code_length = code_length
        self._codes: dict[int, TempCode] = {}

    def current(self, now: float, min_remaining_s: float) -> TempCode | None:
        """An ACTIVE code still valid for at least `min_remaining_s`, to give out again."""
        live = [
            c
            for c in self._codes.values()
            if c.state is CodeState.ACTIVE and c.expires_at - now >= min_remaining_s
        ]
        return max(live, key=lambda c: c.expires_at) if live else None

    def allocate(self, now: float, ttl_s: float, request: str = "") -> TempCode | None:
        """Record a fresh code in the first free reserved slot (state SETTING); None when all are taken."""
        free = next((s for s in self.slots if s not in self._codes), None)
        if free is None:
            return None
        code = TempCode(
            slot=free,
            code=new_code(self.code_length),
            created_at=now,
            expires_at=now + ttl_s,
            clear_at=now + ttl_s,
            state=CodeState.SETTING,
            request=request,
        )
        self._codes[free] = code
        return code

    def get(self, slot: int) -> TempCode | None:
        return self._codes.get(slot)

    def mark(self, slot: int, state: CodeState, *, clear_at: float | None = None) -> TempCode:
        """Change a code's state (and optionally when to clear it); returns the new record."""
        old = self._codes.get(slot)
        if old is None:
            raise LocalProtocolError(f"slot {slot} holds no temporary code")
        new = replace(old, state=state, clear_at=old.clear_at if clear_at is None else clear_at)
        self._codes[slot] = new
        return new

    def remove(self, slot: int) -> None:
        """Forget a slot once the lock confirmed it cleared."""
        self._codes.pop(slot, None)

    def codes(self) -> list[TempCode]:
        """Every temporary code the hub is responsible for, by slot."""
        return [self._codes[s] for s in sorted(self._codes)]

    def due(self, now: float) -> list[TempCode]:
        """Codes whose clear time has come."""
        return [c for c in self.codes() if c.clear_at <= now]

    def next_due(self) -> float | None:
        return min((c.clear_at for c in self._codes.values()), default=None)

    # -- persistence --------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"codes": [{**asdict(c), "state": c.state.value} for c in self.codes()]}

    def load_json(self, data: dict[str, Any]) -> list[TempCode]:
        """Restore codes saved by `to_json`; codes in slots no longer reserved are returned, not kept.

        Those were written by this hub, so they are still temporary: the caller clears them.
        """
        orphans: list[TempCode] = []
        for raw in data.get("codes", []):
            code = TempCode(**{**raw, "state": CodeState(raw["state"])})
            if code.slot in self.slots:
                self._codes[code.slot] = code
            else:
                orphans.append(code)
        return orphans
