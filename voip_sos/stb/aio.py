"""asyncio adapter for the STB agent core: one UDP socket, one timer, awaitable results.

Used by `voip-sos stb …`, the tests and the surge benchmark (many agents in one process, each on
its own loopback address).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any, cast

from voip_sos.sos.events import Addr
from voip_sos.sos.retry import GIVE_UP_S
from voip_sos.sos.wire import MsgType, StatusCode
from voip_sos.stb.agent import StbAgent
from voip_sos.stb.events import (
    AgentEvent,
    ClockCorrected,
    ReceiptReceived,
    RejectReceived,
    RequestTimedOut,
    StatusReceived,
)

__all__ = ["Answer", "StbClient", "open_stb_client"]

logger = logging.getLogger(__name__)

Answer = ReceiptReceived | RejectReceived | RequestTimedOut


class StbClient(asyncio.DatagramProtocol):
    """An STB agent on a socket. One request at a time; STATUS arrives on `statuses`."""

    def __init__(self, agent: StbAgent) -> None:
        self.agent = agent
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._answer: asyncio.Future[Answer] | None = None
        self.statuses: asyncio.Queue[StatusReceived] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.agent.receive_datagram(data, (addr[0], addr[1]), self._loop.time())
        self._pump()

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a backend that is down: the schedule fails over by itself.
        logger.debug("STB socket error", extra={"error": str(exc)})

    async def request(
        self,
        kind: MsgType,
        *,
        test: bool = False,
        door_code: str | None = None,
        parking_code: str | None = None,
        note: str | None = None,
    ) -> Answer:
        """Send a request and retransmit until a RECEIPT, a REJECT or the give-up time."""
        _, answer = self.send_request(
            kind, test=test, door_code=door_code, parking_code=parking_code, note=note
        )
        return await answer

    def send_request(
        self,
        kind: MsgType,
        *,
        test: bool = False,
        door_code: str | None = None,
        parking_code: str | None = None,
        note: str | None = None,
    ) -> tuple[bytes, asyncio.Future[Answer]]:
        """Start a request now; its id at once (the hub instruction shares an SOS's id), its answer later."""
        answer: asyncio.Future[Answer] = self._loop.create_future()
        self._answer = answer
        rid = self.agent.send(
            kind, self._loop.time(), test=test, door_code=door_code, parking_code=parking_code, note=note
        )
        self._pump()

        def done(_: asyncio.Future[Answer]) -> None:
            if self._answer is answer:
                self._answer = None

        answer.add_done_callback(done)
        return rid, answer

    async def follow(self, timeout_s: float) -> list[StatusReceived]:
        """Collect STATUS (answering SEEN) until CLOSED or `timeout_s`; returns them in order."""
        got: list[StatusReceived] = []
        deadline = self._loop.time() + timeout_s
        while (left := deadline - self._loop.time()) > 0:
            try:
                st = await asyncio.wait_for(self.statuses.get(), left)
            except TimeoutError:
                break
            got.append(st)
            if st.status is StatusCode.CLOSED:
                break
        return got

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()

    def _pump(self) -> None:
        while (ev := self.agent.next_event()) is not None:
            self._on_event(ev)
        if self._transport is not None:
            for data, addr in self.agent.datagrams_to_send(self._loop.time()):
                self._transport.sendto(data, addr)
        when = self.agent.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.agent.handle_timer(self._loop.time())
        self._pump()

    def _on_event(self, ev: AgentEvent) -> None:
        if isinstance(ev, StatusReceived):
            self.statuses.put_nowait(ev)
        elif isinstance(ev, ClockCorrected):
            logger.info("STB clock corrected from the backend", extra={"offset_s": round(ev.offset_s, 3)})
        elif self._answer is not None and not self._answer.done():
            self._answer.set_result(ev)


async def _resolve(host: str, port: int, family: int) -> Addr:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    sockaddr = infos[0][4]
    return str(sockaddr[0]), int(sockaddr[1])


async def open_stb_client(
    ip: str,
    key: bytes,
    backends: Sequence[tuple[str, int]],
    *,
    bind: tuple[str, int] | None = None,
    give_up_s: float = GIVE_UP_S,
) -> StbClient:
    """An STB client sending from `bind` (default: its own IP, any port) to the backends."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in (bind or (ip, 0))[0] else socket.AF_INET
    # Backends are reached over the family the STB's own address is in (a name may resolve to both).
    resolved = [await _resolve(h, p, family) for h, p in backends]
    # A process that does not keep its counter on disk starts from the clock, so the sequence numbers
    # an STB sends still increase across restarts of the agent (or runs of the CLI).
    first_seq = int(time.time()) & 0xFFFFFFFF
    agent = StbAgent(ip, key, resolved, time.time, give_up_s=give_up_s, first_seq=first_seq)
    _, proto = await loop.create_datagram_endpoint(
        lambda: StbClient(agent), local_addr=bind or (ip, 0), family=family
    )
    return proto
