"""A UDP transport that drains its socket: many datagrams per wakeup, not one per loop turn.

asyncio's own datagram transport reads one datagram each time the loop finds the socket readable,
then runs every other ready callback before reading the next. With 300 calls' RTP timers, incident
tasks and SQL results ready on every turn, the 600 answers of a surge (100 Trying, 200 OK, 202)
waited in the socket's queue for a second (bench/sos_e2e.py: answer -> RTP). This transport reads
up to `MAX_BATCH` datagrams per wakeup and hands each to an ordinary `asyncio.DatagramProtocol`, so
the SIP and SOS adapters keep their protocol classes; a protocol with a `batch_done()` method has it
called after each batch.

Sending goes straight to the socket; when the kernel's buffer is full (EAGAIN), datagrams wait in a
bounded queue flushed when the socket is writable again, as asyncio's transport does.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["BatchUdpTransport", "open_batch_udp"]

log = logging.getLogger(__name__)

P = TypeVar("P", bound=asyncio.DatagramProtocol)

MAX_BATCH = 256
MAX_QUEUED_BYTES = 4 * 1024 * 1024
_RECV_BYTES = 65_535


class BatchUdpTransport(asyncio.DatagramTransport):
    """An `asyncio.DatagramTransport` over a bound, non-blocking UDP socket (see module docstring)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.DatagramProtocol
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._queue: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._queued_bytes = 0
        self._closing = False
        self._extra = {"socket": sock, "sockname": sock.getsockname()}
        sock.setblocking(False)
        protocol.connection_made(self)
        loop.add_reader(sock.fileno(), self._read_ready)

    # -- reading -----------------------------------------------------------------------------------

    def _read_ready(self) -> None:
        try:
            for _ in range(MAX_BATCH):
                if self._closing:
                    return
                try:
                    data, addr = self._sock.recvfrom(_RECV_BYTES)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    # ICMP errors (port unreachable from a peer that went away) surface here.
                    self._protocol.error_received(exc)
                    continue
                try:
                    self._protocol.datagram_received(data, addr)
                except Exception:  # a protocol bug must not stop the socket being read
                    log.exception("datagram handler failed", extra={"source": str(addr)})
        finally:
            # Work worth doing once per batch rather than per datagram (the SIP agent's timer).
            done = getattr(self._protocol, "batch_done", None)
            if done is not None and not self._closing:
                try:
                    done()
                except Exception:
                    log.exception("batch handler failed")

    # -- writing -----------------------------------------------------------------------------------

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if self._closing:
            return
        if not self._queue:
            try:
                self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._sock.fileno(), self._write_ready)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
        if self._queued_bytes + len(data) > MAX_QUEUED_BYTES:
            log.warning("UDP send queue full: datagram dropped", extra={"to": str(addr)})
            return
        self._queue.append((bytes(data), addr))
        self._queued_bytes += len(data)

    def _write_ready(self) -> None:
        while self._queue:
            data, addr = self._queue[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
            self._queue.popleft()
            self._queued_bytes -= len(data)
        self._loop.remove_writer(self._sock.fileno())

    def get_write_buffer_size(self) -> int:
        return self._queued_bytes

    # -- lifetime ----------------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_writer(self._sock.fileno())
        self._queue.clear()
        self._loop.call_soon(self._finish)

    def abort(self) -> None:
        self.close()

    def _finish(self) -> None:
        try:
            self._protocol.connection_lost(None)
        finally:
            self._sock.close()


async def open_batch_udp(sock: socket.socket, factory: Callable[[], P]) -> tuple[BatchUdpTransport, P]:
    """Like `loop.create_datagram_endpoint(factory, sock=sock)`, with the draining transport."""
    loop = asyncio.get_running_loop()
    protocol = factory()
    return BatchUdpTransport(loop, sock, protocol), protocol
