"""The STB's key press with a home hub: SOS to the backend and INSTRUCTION to the hub at once.

The hub instruction carries the SOS's own request id (the hub echoes it in its MQTT events, so
the backend knows which incident a code belongs to). Nothing waits for the hub: the SOS goes out
first and is answered on its own schedule. Every CODES reply with a new door code or parking pass
is forwarded to the backend as an SOS UPDATE (with every code known so far) once the SOS has its
RECEIPT; the hub also reports the codes to the backend itself, and the backend recognises the
repeat (docs/hub-protocol.md §1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voip_sos.hub.aio import HubClientEndpoint
from voip_sos.hub.events import CodesReceived, RevokeConfirmed
from voip_sos.sos.wire import MsgType
from voip_sos.stb.aio import Answer, StbClient
from voip_sos.stb.events import ReceiptReceived

__all__ = ["HUB_WAIT_S", "CancelOutcome", "PressOutcome", "cancel_with_hub", "press_with_hub"]

logger = logging.getLogger(__name__)

HUB_WAIT_S = 75.0
"""How long the STB waits for the hub's final answer: longer than the hub's own deadline (60 s)."""


@dataclass(slots=True)
class ForwardedUpdate:
    """One UPDATE the STB sent with the hub's codes, and the backend's answer."""

    door_code: str | None
    parking_code: str | None
    answer: Answer


@dataclass(slots=True)
class PressOutcome:
    """What a press with a hub did."""

    request_id: bytes
    """The SOS's request id (also the hub instruction's)."""
    answer: Answer
    """The backend's answer to the SOS."""
    codes: CodesReceived | None = None
    """The hub's latest CODES (FINAL unless the hub did not finish in time); None: no answer."""
    updates: list[ForwardedUpdate] = field(default_factory=list)
    """UPDATEs forwarded to the backend, in order."""
    door_code_at: float | None = None
    """Event-loop time the door code arrived from the hub (None: it never did)."""


@dataclass(slots=True)
class CancelOutcome:
    answer: Answer
    revoked: RevokeConfirmed | None


async def press_with_hub(
    client: StbClient,
    hub: HubClientEndpoint,
    *,
    test: bool = False,
    hub_wait_s: float = HUB_WAIT_S,
    on_answer: Callable[[Answer], None] | None = None,
) -> PressOutcome:
    """Press: the SOS and the hub instruction in parallel; forward new codes as UPDATEs.

    `on_answer` sees the backend's answer to the SOS the moment it arrives (the outcome comes
    only once the hub has finished too)."""
    loop = asyncio.get_running_loop()
    rid, answer_fut = client.send_request(MsgType.SOS, test=test)
    codes_q: asyncio.Queue[CodesReceived] = asyncio.Queue()
    door_at: list[float] = []

    def on_codes(codes: CodesReceived) -> None:
        if codes.door_code and not door_at:
            door_at.append(loop.time())
        codes_q.put_nowait(codes)

    hub_task = asyncio.ensure_future(_codes(hub, test, rid, on_codes, hub_wait_s))
    outcome = PressOutcome(rid, await answer_fut)
    if on_answer is not None:
        on_answer(outcome.answer)
    try:
        await _forward(client, outcome, hub_task, codes_q)
    finally:
        if not hub_task.done():
            hub_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hub_task
    outcome.door_code_at = door_at[0] if door_at else None
    return outcome


async def _codes(
    hub: HubClientEndpoint,
    test: bool,
    rid: bytes,
    on_codes: Callable[[CodesReceived], None],
    wait_s: float,
) -> CodesReceived | None:
    try:
        async with asyncio.timeout(wait_s):
            return await hub.request_codes(test=test, on_update=on_codes, request_id=rid)
    except TimeoutError:
        logger.warning("home hub gave no final answer in time", extra={"request": rid.hex()})
        return None


async def _forward(
    client: StbClient,
    outcome: PressOutcome,
    hub_task: asyncio.Future[CodesReceived | None],
    queue: asyncio.Queue[CodesReceived],
) -> None:
    door: str | None = None
    parking: str | None = None
    while True:
        if queue.empty():
            if hub_task.done():
                return
            getter = asyncio.ensure_future(queue.get())
            either: set[asyncio.Future[Any]] = {getter, hub_task}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                continue
            got = [getter.result()]
        else:
            got = []
        while not queue.empty():  # whatever else arrived meanwhile goes into the same UPDATE
            got.append(queue.get_nowait())
        for codes in got:
            outcome.codes = codes
        new_door = next((c.door_code for c in reversed(got) if c.door_code), None)
        new_parking = next((c.parking_code for c in reversed(got) if c.parking_code), None)
        if (new_door in (None, door)) and (new_parking in (None, parking)):
            continue
        door, parking = new_door or door, new_parking or parking
        if not isinstance(outcome.answer, ReceiptReceived):
            continue  # no incident to add them to; the hub reports them to the backend itself
        answer = await client.request(MsgType.UPDATE, door_code=door, parking_code=parking)
        outcome.updates.append(ForwardedUpdate(door, parking, answer))


async def cancel_with_hub(
    client: StbClient, hub: HubClientEndpoint, *, hub_wait_s: float = HUB_WAIT_S
) -> CancelOutcome:
    """False alarm: CANCEL to the backend and REVOKE (every temporary code) to the hub at once."""

    async def revoke() -> RevokeConfirmed | None:
        try:
            async with asyncio.timeout(hub_wait_s):
                return await hub.revoke()
        except TimeoutError:
            return None

    answer, revoked = await asyncio.gather(client.request(MsgType.CANCEL), revoke())
    return CancelOutcome(answer, revoked)
