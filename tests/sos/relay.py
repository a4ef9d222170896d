"""A lossy UDP relay for the tests: drops a share of datagrams each way, keeps each STB's source address.

STBs send to the relay's address. For every STB socket the relay opens an upstream socket bound to
that STB's own IP (so the backend's "carried IP = UDP source" check still holds) and forwards to the
backend; whatever the backend sends to that upstream socket (RECEIPT, REJECT, STATUS) goes back to
the STB from the relay's address. Loss is drawn from a seeded generator, so a run can be repeated.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

Addr = tuple[str, int]


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay, stb: Addr) -> None:
        self.relay = relay
        self.stb = stb
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay.down(data, self.stb)


class LossyRelay(asyncio.DatagramProtocol):
    """Relay between STBs and one backend; `loss_up` / `loss_down` are drop probabilities."""

    def __init__(self, backend: Addr, *, loss_up: float, loss_down: float, seed: int = 1) -> None:
        self.backend = backend
        self.loss_up = loss_up
        self.loss_down = loss_down
        self._rng = random.Random(seed)
        self._transport: asyncio.DatagramTransport | None = None
        self._upstreams: dict[Addr, _Upstream] = {}
        self._opening: dict[Addr, asyncio.Task[_Upstream]] = {}
        self.counts = {"up": 0, "up_dropped": 0, "down": 0, "down_dropped": 0}

    @property
    def address(self) -> Addr:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        stb = (addr[0], addr[1])
        self.counts["up"] += 1
        if self._rng.random() < self.loss_up:
            self.counts["up_dropped"] += 1
            return
        up = self._upstreams.get(stb)
        if up is not None and up.transport is not None:
            up.transport.sendto(data, self.backend)
            return
        task = self._opening.get(stb)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open(stb))
            self._opening[stb] = task
        task.add_done_callback(lambda t: t.result().transport.sendto(data, self.backend))  # type: ignore[union-attr]

    async def _open(self, stb: Addr) -> _Upstream:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(lambda: _Upstream(self, stb), local_addr=(stb[0], 0))
        self._upstreams[stb] = proto
        return proto

    def down(self, data: bytes, stb: Addr) -> None:
        self.counts["down"] += 1
        if self._rng.random() < self.loss_down:
            self.counts["down_dropped"] += 1
            return
        assert self._transport is not None
        self._transport.sendto(data, stb)

    def close(self) -> None:
        for up in self._upstreams.values():
            if up.transport is not None:
                up.transport.close()
        if self._transport is not None:
            self._transport.close()


async def start_relay(backend: Addr, *, loss_up: float, loss_down: float, seed: int = 1) -> LossyRelay:
    loop = asyncio.get_running_loop()
    _, relay = await loop.create_datagram_endpoint(
        lambda: LossyRelay(backend, loss_up=loss_up, loss_down=loss_down, seed=seed),
        local_addr=("127.0.0.1", 0),
    )
    return relay
