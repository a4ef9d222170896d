"""asyncio adapter for the SIP core: one UDP socket, a TCP listener and outgoing TCP connections,
the loop clock and one timer. It moves bytes and nothing else (STYLE.md §1).

TCP connections are kept per peer address and reused both ways (§18: responses to a request that
came over TCP go back on its connection). A refused TCP connection is reported to the core with
`transport_failed()`; for a large request the core then resends over UDP (§18.1.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from voip_sos.aio.udp import open_batch_udp
from voip_sos.errors import ProtocolError
from voip_sos.sip.agent import Outgoing
from voip_sos.sip.agent_calls import SipAgent
from voip_sos.sip.events import Event
from voip_sos.sip.message import StreamParser

__all__ = ["SipTransport", "local_address_towards"]

log = logging.getLogger(__name__)

Addr = tuple[str, int]
TCP_CONNECT_TIMEOUT_S = 2.0
# SIP socket receive buffer asked for (see `start`).
UDP_RCVBUF_BYTES = 4 * 1024 * 1024


def local_address_towards(host: str, port: int) -> str:
    """The local IP the kernel would use to reach host:port (no packet is sent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)

    def batch_done(self) -> None:
        self.owner._arm()


class _Tcp(asyncio.Protocol):
    def __init__(self, owner: SipTransport, peer: Addr | None = None) -> None:
        self.owner = owner
        self.peer = peer
        self.parser = StreamParser()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.peer is None:
            info = transport.get_extra_info("peername")
            self.peer = (info[0], info[1])
        self.owner._tcp[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        self.parser.feed(data)
        while True:
            try:
                msg = self.parser.next_message()
            except ProtocolError as exc:
                log.warning("tcp from %s: %s", self.peer, exc)
                if self.parser.poisoned and self.transport is not None:
                    self.transport.close()
                    return
                continue
            if msg is None:
                return
            self.owner._on_message(msg, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.owner._tcp.get(self.peer) is self:
            del self.owner._tcp[self.peer]


class SipTransport:
    """Runs a `SipAgent` on real sockets; `on_event` receives every core event."""

    def __init__(self, agent: SipAgent, on_event: Callable[[Event], None]) -> None:
        self.agent = agent
        self.on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _Udp | None = None
        self._server: asyncio.Server | None = None
        self._tcp: dict[Addr, _Tcp] = {}
        self._connecting: dict[Addr, asyncio.Task[None]] = {}
        self._queued: dict[Addr, list[Outgoing]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.sent: list[tuple[float, Outgoing]] | None = None  # set to a list to record (tests)
        # Called with ("in" | "out", bytes, peer address, transport) for every message (CLI trace).
        self.trace: Callable[[str, bytes, Addr, str], None] | None = None

    @staticmethod
    async def bind(host: str, port: int) -> tuple[socket.socket, int]:
        """A UDP socket on host:port (port 0 = any), with the TCP port of the same number free."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(50):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp.bind((host, port))
            except OSError:
                udp.close()
                raise
            chosen = udp.getsockname()[1]
            probe = socket.socket(family, socket.SOCK_STREAM)
            try:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, chosen))
                return udp, chosen
            except OSError:
                udp.close()
                if port:
                    raise
            finally:
                probe.close()
        raise OSError("no port free for both UDP and TCP")

    async def start(self, udp_sock: socket.socket, tcp: bool = True) -> None:
        host, port = udp_sock.getsockname()[:2]
        # A surge of calls brings ~4 answers per call within milliseconds; the 208 KB default buffer
        # overflowed under 100 presses (300 INVITEs) and dropped 200 OKs (bench/sos_e2e.py). The
        # kernel caps this at net.core.rmem_max.
        with contextlib.suppress(OSError):
            udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF_BYTES)
        # Drained many datagrams per wakeup: a surge's answers must not wait a loop turn each.
        self._udp, self._udp_protocol = await open_batch_udp(udp_sock, lambda: _Udp(self))
        if tcp:
            self._server = await self._loop.create_server(lambda: _Tcp(self), host, port, reuse_address=True)
        self.pump()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._connecting.values():
            task.cancel()
        for conn in list(self._tcp.values()):
            if conn.transport is not None:
                conn.transport.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._udp is not None:
            self._udp.close()
            # The port is free only once the socket is really closed (a restart binds it again).
            if self._udp_protocol is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._udp_protocol.closed), 1.0)

    # -- input --------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        if self.trace is not None:
            self.trace("in", data, addr, "UDP")
        try:
            self.agent.receive_datagram(data, addr, self._loop.time(), "UDP")
        except Exception:  # never let one datagram kill the listener (STYLE.md §5)
            log.exception("sip core failed on a datagram from %s", addr)
        # The timer is re-armed once per batch of datagrams (`_Udp.batch_done`): finding the next
        # deadline walks every transaction, and a surge's batch holds hundreds of datagrams.
        self.pump(arm=False)

    def _on_message(self, msg: Any, addr: Addr) -> None:
        if self.trace is not None:
            self.trace("in", msg.to_bytes(), addr, "TCP")
        try:
            self.agent.receive_message(msg, addr, self._loop.time(), "TCP")
        except Exception:
            log.exception("sip core failed on a message from %s", addr)
        self.pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.agent.handle_timer(self._loop.time())
        except Exception:
            log.exception("sip core failed in its timer")
        self.pump()

    # -- output -------------------------------------------------------------------------------------

    def pump(self, *, arm: bool = True) -> None:
        """Send what the core queued, hand out its events, re-arm the one timer (unless `arm` is
        False: then the caller re-arms with `_arm()` soon)."""
        now = self._loop.time()
        for out in self.agent.datagrams_to_send(now):
            if self.sent is not None:
                self.sent.append((now, out))
            self._send(out)
        while (event := self.agent.next_event()) is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("event handler failed on %s", event)
        if arm:
            self._arm()

    def _arm(self) -> None:
        when = self.agent.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(when, self._on_timer) if when is not None else None
            self._timer_at = when

    def _send(self, out: Outgoing) -> None:
        if self.trace is not None:
            self.trace("out", out.data, out.addr, out.transport)
        if out.transport == "UDP":
            if self._udp is not None:
                self._udp.sendto(out.data, out.addr)
            return
        conn = self._tcp.get(out.addr)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(out.data)
            return
        self._queued.setdefault(out.addr, []).append(out)
        if out.addr not in self._connecting:
            self._connecting[out.addr] = self._loop.create_task(self._connect(out.addr))

    async def _connect(self, addr: Addr) -> None:
        try:
            try:
                async with asyncio.timeout(TCP_CONNECT_TIMEOUT_S):
                    await self._loop.create_connection(lambda: _Tcp(self, addr), addr[0], addr[1])
            except (OSError, TimeoutError) as exc:
                log.info("tcp to %s:%s failed: %s", addr[0], addr[1], exc)
                queued = self._queued.pop(addr, [])
                now = self._loop.time()
                for out in queued:
                    if out.tx_key is not None:
                        self.agent.transport_failed(out.tx_key, now)
                self.pump()
                return
            conn = self._tcp.get(addr)
            for out in self._queued.pop(addr, []):
                if conn is not None and conn.transport is not None:
                    conn.transport.write(out.data)
        finally:
            with contextlib.suppress(KeyError):
                del self._connecting[addr]
