"""Events of the STB <-> hub datagram cores (both sides), past-tense names (STYLE.md §3)."""

from __future__ import annotations

from dataclasses import dataclass

from voip_sos.hub.wire import PartState

__all__ = [
    "CodesReceived",
    "DatagramDropped",
    "Event",
    "InstructionReceived",
    "RequestTimedOut",
    "RevokeConfirmed",
    "RevokeRequested",
]

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class InstructionReceived:
    """Hub side: an authenticated, new emergency instruction from the STB."""

    request_id: bytes
    """The STB's request id; replies are keyed by it."""
    addr: Addr
    """Where the STB sent it from (replies go there)."""
    test: bool
    """The STB flagged a test press."""


@dataclass(frozen=True, slots=True)
class RevokeRequested:
    """Hub side: an authenticated, new revoke request from the STB (e.g. a cancelled false alarm)."""

    request_id: bytes
    """The STB's request id."""
    addr: Addr
    """Where the STB sent it from."""


@dataclass(frozen=True, slots=True)
class DatagramDropped:
    """Either side: a datagram was malformed, unauthenticated or unexpected, and dropped."""

    addr: Addr
    """Its source."""
    reason: str
    """Why (the parser's message, "bad mac", "wrong source", ...)."""


@dataclass(frozen=True, slots=True)
class CodesReceived:
    """STB side: the hub reported codes (or their failure) for our instruction; new facts only."""

    request_id: bytes
    """Our instruction's id."""
    door_state: PartState
    """Where the door code stands."""
    parking_state: PartState
    """Where the parking pass stands."""
    door_code: str | None
    """The confirmed temporary door code, if issued."""
    parking_code: str | None
    """The parking pass, if issued."""
    door_valid_until_ms: int | None
    """Door code expiry, ms since 1970 UTC."""
    parking_valid_until_ms: int | None
    """Parking pass expiry, ms since 1970 UTC."""
    final: bool
    """Nothing more will come for this instruction."""


@dataclass(frozen=True, slots=True)
class RevokeConfirmed:
    """STB side: the hub answered our revoke."""

    request_id: bytes
    """Our revoke's id."""
    cleared: int
    """Temporary codes cleared and confirmed by the lock."""
    failed: int
    """Temporary codes the lock did not confirm cleared."""


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    """STB side: no final answer before the give-up time."""

    request_id: bytes
    """The request that went unanswered."""


Event = (
    InstructionReceived
    | RevokeRequested
    | DatagramDropped
    | CodesReceived
    | RevokeConfirmed
    | RequestTimedOut
)
