"""asyncio adapter for the SOS listener core: the UDP socket, directory lookups, group commits, timer.

The core decides; this moves bytes and awaits I/O. Lookups run as tasks (at most `max_pending` at a
time, enforced by the core). Authenticated requests go to one writer task that commits whatever has
queued up in one transaction — under a surge that is one fsync for hundreds of presses — and only
after the commit hands the results back to the core, which then sends the RECEIPTs. Log entries
that need no durability before a reply (RECEIPT sent, STATUS sent/seen) ride along with the next
commit or are flushed shortly after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from voip_sos.aio.udp import open_batch_udp
from voip_sos.directory.records import StbMatch
from voip_sos.incidents.store import EventRecord, IncidentStore, Recorded, RequestRecord
from voip_sos.sos.events import (
    Addr,
    ReceiptSent,
    RejectSent,
    RequestAuthenticated,
    RequestParsed,
    StatusAbandoned,
    StatusSeen,
    StatusSent,
)
from voip_sos.sos.listener import ListenerSettings, SosListener
from voip_sos.sos.wire import MsgType, RejectReason, StatusCode

__all__ = ["Lookup", "OnRecorded", "SosListenerProtocol", "start_sos_listener"]

logger = logging.getLogger(__name__)

MAX_BATCH = 512
# A surge of presses (and a flood beside it) must queue in the kernel, not be dropped there.
RCVBUF_BYTES = 8 * 1024 * 1024
LOG_FLUSH_S = 0.2
MAX_LOG_BACKLOG = 100_000
MAX_LATENCY_SAMPLES = 100_000

_STATUS_LOG = {StatusSent: "status_sent", StatusSeen: "status_seen", StatusAbandoned: "status_unseen"}
_KINDS = {
    MsgType.SOS: "sos",
    MsgType.CANCEL: "cancel",
    MsgType.UPDATE: "update",
    MsgType.HEARTBEAT: "heartbeat",
}


class Lookup(Protocol):
    async def lookup_stb(self, ip: str) -> StbMatch | None: ...


# Called after a request is committed and answered (the incidents runner hooks in here).
OnRecorded = Callable[[RequestRecord, Recorded], Awaitable[None] | None]


class SosListenerProtocol(asyncio.DatagramProtocol):
    """One UDP socket serving the SOS protocol."""

    def __init__(
        self,
        settings: ListenerSettings,
        directory: Lookup,
        store: IncidentStore,
        on_recorded: OnRecorded | None = None,
    ) -> None:
        self.core = SosListener(settings, time.time)
        self._directory = directory
        self._store = store
        self._on_recorded = on_recorded
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queue: asyncio.Queue[tuple[int, RequestRecord]] = asyncio.Queue()
        self._log: list[EventRecord] = []
        self._log_flush: asyncio.TimerHandle | None = None
        self._writer = self._loop.create_task(self._write_loop(), name="sos-writer")
        self._closed = asyncio.Event()
        self._closing = False
        self.receipt_latencies: list[float] = []
        """Seconds from arrival to RECEIPT of each first answer since the owner last took them."""

    # -- asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._closing:
            return
        try:
            self.core.receive_datagram(data, (addr[0], addr[1]), self._loop.time())
            self._pump(arm=False)  # re-armed once per batch: batch_done
        except Exception:  # nothing a sender does may take the listener down
            logger.exception("SOS listener failed on a datagram", extra={"source": addr[0]})

    def batch_done(self) -> None:
        self._arm_timer()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from an STB that went away: nothing to do, the core resends or gives up.
        logger.debug("SOS socket error", extra={"error": str(exc)})

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()

    # -- public --------------------------------------------------------------------------------------

    @property
    def address(self) -> Addr:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def send_status(self, incident_id: int, ip: str, status: StatusCode, detail: str | None = None) -> int:
        """Tell the STB how its incident is going (resent until SEEN); returns the STATUS number."""
        seq = self.core.send_status(incident_id, ip, status, self._loop.time(), detail)
        self._pump()
        return seq

    async def close(self) -> None:
        """Stop receiving, finish what is being recorded, flush the log, close the socket."""
        self._closing = True
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        await self._queue.join()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        await self._flush_log()
        if self._timer is not None:
            self._timer.cancel()
        if self._log_flush is not None:
            self._log_flush.cancel()
        if self._transport is not None:
            self._transport.close()

    # -- plumbing ----------------------------------------------------------------------------------------

    def _pump(self, *, arm: bool = True) -> None:
        now = self._loop.time()
        while (ev := self.core.next_event()) is not None:
            if isinstance(ev, RequestParsed):
                self._spawn(self._lookup(ev.ticket, ev.ip))
            elif isinstance(ev, RequestAuthenticated):
                self._queue.put_nowait((ev.ticket, _record_of(ev)))
            elif isinstance(ev, ReceiptSent):
                if ev.incident_id and not ev.again and ev.kind is not MsgType.HEARTBEAT:
                    self._add_log(ev.incident_id, "receipt_sent", {"request_id": ev.request_id.hex()})
                if not ev.again and len(self.receipt_latencies) < MAX_LATENCY_SAMPLES:
                    self.receipt_latencies.append(ev.elapsed_s)
            elif isinstance(ev, RejectSent):
                pass  # counted and logged by the core; no incident to attach it to
            elif isinstance(ev, StatusSent | StatusSeen | StatusAbandoned):
                detail = {"status": ev.status.name.lower(), "status_seq": ev.status_seq}
                self._add_log(ev.incident_id, _STATUS_LOG[type(ev)], detail)
        if self._transport is not None and not self._transport.is_closing():
            # A socket closing at shutdown takes nothing more; what was queued is dropped with it.
            for data, addr in self.core.datagrams_to_send(now):
                self._transport.sendto(data, addr)
        if arm:
            self._arm_timer()

    def _arm_timer(self) -> None:
        when = self.core.get_timer()
        if self._timer is not None and (when is None or self._timer.when() != when):
            self._timer.cancel()
            self._timer = None
        if when is not None and self._timer is None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.core.handle_timer(self._loop.time())
            self._pump()
        except Exception:
            logger.exception("SOS listener timer failed")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lookup(self, ticket: int, ip: str) -> None:
        try:
            match = await self._directory.lookup_stb(ip)
        except Exception:
            logger.exception("directory lookup failed", extra={"stb": ip})
            self.core.record_failed(ticket, self._loop.time(), "directory lookup failed")
        else:
            self.core.lookup_done(ticket, match, self._loop.time())
        self._pump()

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            log, self._log = self._log, []
            try:
                results = await self._store.record([rec for _, rec in batch], log)
            except Exception as exc:
                logger.exception("recording SOS requests failed", extra={"requests": len(batch)})
                now = self._loop.time()
                for ticket, _ in batch:
                    self.core.record_failed(ticket, now, type(exc).__name__)
                self._log = log + self._log
            else:
                now = self._loop.time()
                for (ticket, _rec), res in zip(batch, results, strict=True):
                    if res.incident_id is None:
                        self.core.refused(ticket, RejectReason.NO_INCIDENT, now)
                    else:
                        self.core.recorded(ticket, res.incident_id, now, again=res.again)
                self._pump()
                if self._on_recorded is not None:
                    for (_, rec), res in zip(batch, results, strict=True):
                        await self._notify(rec, res)
            finally:
                for _ in batch:
                    self._queue.task_done()
            self._pump()

    async def _notify(self, rec: RequestRecord, res: Recorded) -> None:
        assert self._on_recorded is not None
        try:
            out = self._on_recorded(rec, res)
            if out is not None:
                await out
        except Exception:
            logger.exception("on_recorded hook failed", extra={"incident": res.incident_id})

    def _add_log(self, incident_id: int, kind: str, detail: dict[str, Any]) -> None:
        self._log.append(EventRecord(incident_id, kind, datetime.now(UTC), detail))
        if len(self._log) > MAX_LOG_BACKLOG:
            # The database has been unreachable for long: keep memory bounded, say what was lost.
            lost = len(self._log) - MAX_LOG_BACKLOG
            del self._log[:lost]
            logger.error("incident log backlog full: oldest entries dropped", extra={"dropped": lost})
        if self._log_flush is None:
            self._log_flush = self._loop.call_later(LOG_FLUSH_S, lambda: self._spawn(self._flush_log()))

    async def _flush_log(self) -> None:
        self._log_flush = None
        if not self._log or not self._queue.empty():
            return  # the writer takes them with its next batch
        log, self._log = self._log, []
        try:
            await self._store.append_events(log)
        except Exception:
            logger.exception("writing the incident log failed", extra={"entries": len(log)})
            self._log = log + self._log


def _record_of(ev: RequestAuthenticated) -> RequestRecord:
    msg = ev.message
    sub = ev.match.subscriber
    detail: dict[str, Any] = {
        "seq": msg.seq,
        "stb_time_ms": msg.timestamp_ms,
        "source": f"{ev.source[0]}:{ev.source[1]}",
        "key": "operator" if ev.operator_key else "stb",
    }
    for name in ("door_code", "parking_code", "note"):
        value = getattr(msg, name)
        if value is not None:
            detail[name] = value
    return RequestRecord(
        kind=_KINDS[msg.type],
        request_id=msg.request_id,
        stb_ip=msg.ip,
        uid=sub.uid,
        at=datetime.fromtimestamp(ev.received_wall, UTC),
        test=msg.test,
        detail=detail,
        subscriber=sub,
        lookup={
            "uid": sub.uid,
            "name": sub.name,
            "address": sub.address.full(),
            "language": sub.language,
            "contacts": len(sub.contacts),
        },
    )


async def start_sos_listener(
    host: str,
    port: int,
    settings: ListenerSettings,
    directory: Lookup,
    store: IncidentStore,
    on_recorded: OnRecorded | None = None,
    *,
    sock: socket.socket | None = None,
) -> SosListenerProtocol:
    """Bind the SOS socket (or serve an already bound `sock`) and start; `await proto.close()` stops it."""
    if sock is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
    # Drained many datagrams per wakeup (a surge of presses arrives faster than one per loop turn).
    transport, proto = await open_batch_udp(
        sock, lambda: SosListenerProtocol(settings, directory, store, on_recorded)
    )
    bound = transport.get_extra_info("socket")
    with contextlib.suppress(OSError):
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    return proto
