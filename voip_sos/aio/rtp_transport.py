"""asyncio adapter for call media: UDP port pairs, one shared pacing timer, events out.

`RtpEngine` (one per user agent) owns the `rtp.ports` range and a single scheduler for every call in
the process: each stream's schedule is `start + n * 20 ms` with `start` on a 5 ms grid, so all calls
fall into four phases of the 20 ms cycle and one timer wakeup sends the due packet of every call in
that phase. 500 calls cost 200 wakeups a second, not 25,000, and no stream's timing depends on any
other's (each is sent against its own absolute schedule; a late wakeup is caught up, never carried).

`RtpSession` is one call: an RTP socket on an even port and RTCP on the odd one above (RFC 3550
§11), a `MediaSession` core that decides everything, and events delivered to a callback or a queue.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voip_sos.aio.udp import BatchUdpTransport
from voip_sos.config import PortRange
from voip_sos.errors import MediaError, ProtocolError
from voip_sos.logs import bind
from voip_sos.rtp.events import RtpEvent
from voip_sos.rtp.g711 import Codec
from voip_sos.rtp.prompt import Prompt
from voip_sos.rtp.receiver import ReceiveStats
from voip_sos.rtp.session import RTCP_INTERVAL_S, MediaSession

__all__ = ["GRID_S", "PortPool", "RtpEngine", "RtpSession", "RtpStats"]

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
EventCallback = Callable[[RtpEvent], None]
GRID_S = 0.005  # stream start times are multiples of this: four phases per 20 ms frame


@dataclass(frozen=True, slots=True)
class RtpStats:
    """A snapshot of one call's media."""

    local_port: int
    remote: Addr | None
    """Where our RTP goes now (after symmetric latching)."""
    ssrc: int
    packets_sent: int
    octets_sent: int
    prompt_repetitions: int
    slots_skipped: int
    """20 ms slots skipped because the process stalled for more than 100 ms."""
    received: ReceiveStats


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession, rtcp: bool) -> None:
        self.session, self.rtcp = session, rtcp
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.session._on_datagram(data, (addr[0], addr[1]), self.rtcp)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the far end is not listening (yet); keep sending.
        self.session._log.debug("rtp socket error", extra={"error": str(exc), "rtcp": self.rtcp})


class RtpSession:
    """The media of one call. Create with `RtpEngine.open()`."""

    def __init__(
        self,
        engine: RtpEngine,
        port: int,
        core: MediaSession,
        on_event: EventCallback | None,
        log_context: dict[str, object],
    ) -> None:
        self._engine = engine
        self.local_port = port
        self.core = core
        self._on_event = on_event
        self.events: asyncio.Queue[RtpEvent] = asyncio.Queue()
        self._log = bind(logger, **log_context, port=port)
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._endpoints: list[_Endpoint] = []
        self.closed = False

    @property
    def local_rtcp_port(self) -> int:
        return self.local_port + 1

    # --- what the SIP user agent calls ---------------------------------------------------------

    def set_remote(
        self,
        addr: Addr,
        *,
        codec: Codec,
        payload_type: int,
        telephone_event_pt: int | None = None,
        rtcp_addr: Addr | None = None,
    ) -> None:
        """Apply the SDP answer (or a re-INVITE's): destination, codec and payload types."""
        self.core.set_remote(
            addr,
            codec=codec,
            payload_type=payload_type,
            telephone_event_pt=telephone_event_pt,
            rtcp_addr=rtcp_addr,
        )
        self._log.info("rtp remote set", extra={"remote": f"{addr[0]}:{addr[1]}", "codec": codec})

    def start(self, prompt: Prompt | None, *, loop: bool = True, gap_s: float = 0.0) -> None:
        """Start our stream (its first packet at once) playing `prompt`, or silence if None."""
        self._engine._start(self, prompt, loop=loop, gap_s=gap_s)

    def replace_prompt(self, prompt: Prompt, *, loop: bool = True, gap_s: float = 0.0) -> None:
        """Play `prompt` from its top at the next frame; the stream itself goes on."""
        self.core.sender.play(prompt, loop=loop, gap_s=gap_s)

    def preload(self, prompt: Prompt) -> None:
        """Nothing to do: the prompt is in this process already (see media_process)."""

    def restart_prompt(self) -> None:
        """Play the current prompt again from its top."""
        self.core.sender.restart()

    def silence(self) -> None:
        """Stop the prompt; silence keeps the stream alive."""
        self.core.sender.silence()

    def set_sending(self, sending: bool) -> None:
        """Follow hold/unhold (SDP direction): False stops our packets, True resumes the same stream."""
        self.core.sender.pause(not sending)

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """Send one key as RFC 4733 telephone-events (LocalProtocolError if none were negotiated)."""
        self.core.sender.send_dtmf(digit, duration_ms)

    async def stats_now(self) -> RtpStats:
        """`stats`, for code that also drives sessions living in another process."""
        return self.stats

    @property
    def stats(self) -> RtpStats:
        s = self.core.sender
        return RtpStats(
            local_port=self.local_port,
            remote=self.core.remote,
            ssrc=s.ssrc,
            packets_sent=s.packets_sent,
            octets_sent=s.octets_sent,
            prompt_repetitions=s.repetitions,
            slots_skipped=s.slots_skipped,
            received=self.core.receiver.stats(),
        )

    async def close(self) -> None:
        """Send RTCP BYE, stop the stream, close both sockets and give the ports back."""
        if self.closed:
            return
        self.closed = True
        bye = self.core.bye(self._engine._loop.time())
        if bye is not None and self._rtcp is not None and self.core.rtcp_remote is not None:
            self._rtcp.sendto(bye, self.core.rtcp_remote)
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        # The sockets really close one loop iteration later; only then may the ports be reused.
        if self._endpoints:
            await asyncio.wait([e.lost for e in self._endpoints], timeout=1.0)
        self._engine._release(self)
        self._log.info(
            "rtp closed",
            extra={"sent": self.core.sender.packets_sent, "received": self.core.receiver.packets},
        )

    # --- adapter internals ---------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: Addr, rtcp: bool) -> None:
        now = self._engine._loop.time()
        try:
            if rtcp:
                self.core.receive_rtcp(data, addr, now)
            else:
                self.core.receive_rtp(data, addr, now)
        except ProtocolError as exc:
            self._log.debug(
                "malformed datagram dropped", extra={"error": str(exc), "from": f"{addr[0]}:{addr[1]}"}
            )
        except Exception:
            self._log.exception("datagram handling failed")
        self._drain()

    def _send_due(self, now: float) -> None:
        assert self._rtp is not None
        remote = self.core.remote
        for packet in self.core.rtp_due(now):
            self._rtp.sendto(packet, remote)
        report = self.core.rtcp_due(now)
        if report is not None and self._rtcp is not None and self.core.rtcp_remote is not None:
            self._rtcp.sendto(report, self.core.rtcp_remote)
        self._drain()

    def _drain(self) -> None:
        event = self.core.next_event()
        while event is not None:
            self._log.info("rtp event", extra={"event": type(event).__name__})
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception:
                    self._log.exception("rtp event callback failed")
            else:
                self.events.put_nowait(event)
            event = self.core.next_event()


class PortPool:
    """The `rtp.ports` range: even/odd pairs bound on demand and given back after a call. Thread-safe:
    ports are taken where the INVITE is built and given back where the media ran."""

    def __init__(self, ports: PortRange, host: str) -> None:
        self.ports = ports
        self.host = host
        self._in_use: set[int] = set()
        self._lock = threading.Lock()
        self._next_port = ports.first

    def bind_pair(self) -> tuple[socket.socket, socket.socket, int]:
        """The next free pair, bound and non-blocking (RTP, RTCP, RTP port); MediaError if none."""
        with self._lock:
            return self._bind_pair_locked()

    def release(self, port: int) -> None:
        with self._lock:
            self._in_use.discard(port)

    def _bind_pair_locked(self) -> tuple[socket.socket, socket.socket, int]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        pairs = (self.ports.last - self.ports.first + 1) // 2
        for _ in range(pairs):
            port = self._next_port
            self._next_port = port + 2 if port + 3 <= self.ports.last else self.ports.first
            if port in self._in_use:
                continue
            socks: list[socket.socket] = []
            try:
                for p in (port, port + 1):
                    s = socket.socket(family, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.setblocking(False)
                    s.bind((self.host, p))
            except OSError:
                for s in socks:
                    s.close()
                continue
            self._in_use.add(port)
            return socks[0], socks[1], port
        raise MediaError(f"no free RTP port pair in {self.ports}")


class RtpEngine:
    """Port pairs and the shared pacing timer for every call on one event loop."""

    def __init__(
        self,
        *,
        ports: PortRange,
        host: str = "0.0.0.0",
        symmetric: bool = True,
        inband_dtmf: bool = True,
        cname: str | None = None,
        rtcp_interval_s: float = RTCP_INTERVAL_S,
        inactivity_s: float | None = None,
        pool: PortPool | None = None,
    ) -> None:
        """`pool`: where ports come from when another engine shares the range (tests)."""
        self.ports = ports
        self.inactivity_s = inactivity_s
        self.rtcp_interval_s = rtcp_interval_s
        self.host = host
        self.symmetric = symmetric
        self.inband_dtmf = inband_dtmf
        self.cname = cname or f"voip-sos@{socket.gethostname()}"
        self._loop = asyncio.get_running_loop()
        self._wall_offset_s = time.time() - self._loop.time()
        self.pool = pool or PortPool(ports, host)
        self._sessions: set[RtpSession] = set()
        # The calendar: tick index (due time / GRID_S) -> sessions due then; a heap of the indices.
        self._buckets: dict[int, list[RtpSession]] = {}
        self._ticks: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tick: int | None = None

    async def open(
        self, *, on_event: EventCallback | None = None, log_context: dict[str, object] | None = None
    ) -> RtpSession:
        """Bind the next free even/odd port pair; raises MediaError when the range is exhausted."""
        return self.open_now(on_event=on_event, log_context=log_context)

    def open_now(
        self, *, on_event: EventCallback | None = None, log_context: dict[str, object] | None = None
    ) -> RtpSession:
        """`open` without a loop turn (a call's INVITE waits for its ports)."""
        session, rtp_sock, rtcp_sock = self.bind_session(on_event=on_event, log_context=log_context)
        self.adopt(session, rtp_sock, rtcp_sock)
        return session

    def bind_session(
        self, *, on_event: EventCallback | None = None, log_context: dict[str, object] | None = None
    ) -> tuple[RtpSession, socket.socket, socket.socket]:
        """The part of `open_now` that may run on another thread: bind the port pair, make the
        session. `adopt` (on this engine's loop) then starts serving it."""
        rtp_sock, rtcp_sock, port = self.pool.bind_pair()
        session = RtpSession(self, port, self._core(), on_event, log_context or {})
        return session, rtp_sock, rtcp_sock

    def adopt_sockets(
        self,
        port: int,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket,
        *,
        on_event: EventCallback | None = None,
        log_context: dict[str, object] | None = None,
    ) -> RtpSession:
        """Serve a port pair bound elsewhere (the media process gets it from `serve`)."""
        session = RtpSession(self, port, self._core(), on_event, log_context or {})
        self.adopt(session, rtp_sock, rtcp_sock)
        return session

    def _core(self) -> MediaSession:
        return MediaSession(
            symmetric=self.symmetric,
            cname=self.cname,
            wall_offset_s=self._wall_offset_s,
            inband_dtmf=self.inband_dtmf,
            rtcp_interval_s=self.rtcp_interval_s,
            inactivity_s=self.inactivity_s,
        )

    def adopt(self, session: RtpSession, rtp_sock: socket.socket, rtcp_sock: socket.socket) -> None:
        """Serve a session made by `bind_session` (on this engine's loop)."""
        port = session.local_port
        try:
            # Built in place, without a loop turn: a call's INVITE waits for its RTP ports, and in a
            # surge every turn of the loop is long.
            rtp_end, rtcp_end = _Endpoint(session, rtcp=False), _Endpoint(session, rtcp=True)
            session._rtp = BatchUdpTransport(self._loop, rtp_sock, rtp_end)
            session._rtcp = BatchUdpTransport(self._loop, rtcp_sock, rtcp_end)
            session._endpoints = [rtp_end, rtcp_end]
        except BaseException:
            rtp_sock.close()
            rtcp_sock.close()
            self.pool.release(port)
            raise
        self._sessions.add(session)
        session._log.info("rtp opened")

    async def close(self) -> None:
        """Close every session still open."""
        for session in list(self._sessions):
            await session.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def _release(self, session: RtpSession) -> None:
        self._sessions.discard(session)
        self.pool.release(session.local_port)

    # --- the shared scheduler ------------------------------------------------------------------

    def _start(self, session: RtpSession, prompt: Prompt | None, *, loop: bool, gap_s: float) -> None:
        # The stream's schedule starts on the grid point just passed, so its first frame is due
        # now and goes at once (the far end hears us as soon as it answered); the next ones follow
        # the grid with everyone else's.
        now = self._loop.time()
        session.core.start(math.floor(now / GRID_S) * GRID_S, prompt, loop=loop, gap_s=gap_s)
        tick = self._send_and_queue(session, now)
        if tick is not None and (self._timer_tick is None or tick < self._timer_tick):
            self._arm(tick)

    def _arm(self, tick: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_tick = tick
        self._timer = self._loop.call_at(tick * GRID_S, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_tick = None
        now = self._loop.time()
        while self._ticks and self._ticks[0] * GRID_S <= now + 1e-9:
            tick = heapq.heappop(self._ticks)
            # A wakeup may come a hair early (loop clock resolution): judge due-ness by the tick.
            due_now = max(now, tick * GRID_S)
            for session in self._buckets.pop(tick):
                if not session.closed:
                    self._send_and_queue(session, due_now)
        # Armed once here, not per session queued above.
        if self._ticks:
            self._arm(self._ticks[0])

    def _send_and_queue(self, session: RtpSession, now: float) -> int | None:
        """Send what `session` has due at `now` and queue it for its next frame; that frame's tick."""
        try:
            session._send_due(now)
        except Exception:
            session._log.exception("rtp send failed")
        nxt = session.core.sender.next_due()
        if nxt is None:
            return None
        tick = round(nxt / GRID_S)
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = [session]
            heapq.heappush(self._ticks, tick)
        else:
            bucket.append(session)
        return tick
