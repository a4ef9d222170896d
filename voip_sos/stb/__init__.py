"""The reference STB agent: sans-IO core (`agent`) and its events; the asyncio adapter is `stb.aio`."""

from voip_sos.stb.agent import TRIES_BEFORE_FAILOVER, AgentState, StbAgent
from voip_sos.stb.events import (
    AgentEvent,
    ClockCorrected,
    ReceiptReceived,
    RejectReceived,
    RequestTimedOut,
    StatusReceived,
)

__all__ = [
    "TRIES_BEFORE_FAILOVER",
    "AgentEvent",
    "AgentState",
    "ClockCorrected",
    "ReceiptReceived",
    "RejectReceived",
    "RequestTimedOut",
    "StatusReceived",
    "StbAgent",
]
