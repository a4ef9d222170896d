"""asyncio adapters for the STB <-> hub datagram cores: they move bytes, read clocks, own one timer.

`HubEndpoint` is the hub's UDP socket around HubListener; `HubClientEndpoint` is the STB's, around
HubClient, for the STB agent (and for tests and the benchmark, which play the STB).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from voip_sos.hub.client import HubClient
from voip_sos.hub.events import (
    Addr,
    CodesReceived,
    DatagramDropped,
    Event,
    RequestTimedOut,
    RevokeConfirmed,
)
from voip_sos.hub.listener import HubListener

__all__ = ["HubClientEndpoint", "HubEndpoint", "open_hub_client", "open_hub_endpoint"]

log = logging.getLogger(__name__)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HubEndpoint(asyncio.DatagramProtocol):
    """The hub's socket: feeds HubListener, hands its events to `on_event`, sends its replies."""

    def __init__(self, listener: HubListener, on_event: Callable[[Event], None]) -> None:
        self.listener = listener
        self._on_event = on_event
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        peer: Addr = (str(addr[0]), int(addr[1]))
        try:
            self.listener.receive_datagram(data, peer, asyncio.get_running_loop().time())
            while (event := self.listener.next_event()) is not None:
                if isinstance(event, DatagramDropped):
                    log.info(
                        "hub datagram dropped", extra={"peer": f"{peer[0]}:{peer[1]}", "reason": event.reason}
                    )
                    continue
                self._on_event(event)
        except Exception:  # nothing escapes datagram_received (STYLE.md §5)
            log.exception("hub datagram handling failed", extra={"peer": f"{peer[0]}:{peer[1]}"})
        self.flush()

    def flush(self) -> None:
        """Send whatever the listener queued."""
        if self._transport is None:
            return
        for data, addr in self.listener.datagrams_to_send(_wall_ms()):
            self._transport.sendto(data, addr)

    @property
    def local_addr(self) -> Addr:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_hub_endpoint(
    listener: HubListener, on_event: Callable[[Event], None], host: str, port: int
) -> HubEndpoint:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(
        lambda: HubEndpoint(listener, on_event), local_addr=(host, port)
    )
    return proto


class HubClientEndpoint(asyncio.DatagramProtocol):
    """The STB's socket towards its hub."""

    def __init__(self, client: HubClient) -> None:
        self.client = client
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._queues: dict[bytes, asyncio.Queue[Event]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.client.receive_datagram(data, (str(addr[0]), int(addr[1])), loop.time())
        except Exception:
            log.exception("hub reply handling failed")
        self._pump()

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while (event := self.client.next_event()) is not None:
            rid = getattr(event, "request_id", None)
            queue = self._queues.get(rid) if isinstance(rid, bytes) else None
            if queue is not None:
                queue.put_nowait(event)
        if self._transport is not None:
            for data, hub in self.client.datagrams_to_send(loop.time(), _wall_ms()):
                self._transport.sendto(data, hub)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.client.get_timer()
        if when is not None:
            self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.client.handle_timer(asyncio.get_running_loop().time())
        self._pump()

    async def request_codes(
        self,
        *,
        test: bool = False,
        on_update: Callable[[CodesReceived], None] | None = None,
        request_id: bytes | None = None,
    ) -> CodesReceived | None:
        """Send an INSTRUCTION and wait for the hub's FINAL CODES (None when it never came).

        `on_update` sees every CODES with new facts, so the STB can forward a door code as an
        UPDATE the moment it arrives, before the parking pass. `request_id`: the SOS's own id
        (HubClient.instruct).
        """
        rid = self.client.instruct(asyncio.get_running_loop().time(), test=test, request_id=request_id)
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._queues[rid] = queue
        self._pump()
        try:
            while True:
                event = await queue.get()
                if isinstance(event, RequestTimedOut):
                    return None
                if isinstance(event, CodesReceived):
                    if on_update is not None:
                        on_update(event)
                    if event.final:
                        return event
        finally:
            del self._queues[rid]

    async def revoke(self) -> RevokeConfirmed | None:
        """Send a REVOKE and wait for the hub's answer (None when it never came)."""
        rid = self.client.revoke(asyncio.get_running_loop().time())
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._queues[rid] = queue
        self._pump()
        try:
            while True:
                event = await queue.get()
                if isinstance(event, RequestTimedOut):
                    return None
                if isinstance(event, RevokeConfirmed):
                    return event
        finally:
            del self._queues[rid]

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()


async def open_hub_client(
    key: bytes, hub_addr: Addr, *, local_host: str = "127.0.0.1", give_up_s: float = 120.0, seq: int = 0
) -> HubClientEndpoint:
    """A bound STB-side endpoint; the STB's IP is the local address it sends from."""
    loop = asyncio.get_running_loop()
    client = HubClient(key, hub_addr, local_host, give_up_s=give_up_s, seq=seq)
    _, proto = await loop.create_datagram_endpoint(
        lambda: HubClientEndpoint(client), local_addr=(local_host, 0)
    )
    return proto
