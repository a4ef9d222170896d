"""RTP in a process of its own: pacing that nothing else `serve` does can hold up.

A thread was not enough (bench/sos_e2e.py). Every `sendto` releases the GIL, and getting it back
while the SIP loop is busy with a surge's incident starts waits up to a switch interval: 300 calls
need 15,000 sends a second, and a call's first packet queued behind them for tens of ms after its
200 OK. Here the ordinary `RtpEngine` runs in a child process with its own GIL and CPU priority.

`serve` still binds every port pair itself, because the INVITE's SDP needs the port at once; the
two sockets then go to the child with the session's commands over a Unix SOCK_SEQPACKET pair (one
pickled message per packet, file descriptors passed alongside, SCM_RIGHTS). Both ends are the same
program, so pickle is trusted here as in `listener_process`.

    parent -> child   hello (engine settings), open (session, port; its two sockets),
                      remote / start / replace / restart / silence / sending / dtmf / close,
                      prompt (id, PCM in chunks) / forget (id), stats (session), exit
    child -> parent   ready, event (session, RtpEvent), stats (session or all, RtpStats), closed
                      (session, final RtpStats)

A prompt goes over once however many calls play it, and is forgotten when the last one stops.
The child sends every open session's counters each second, so `stats` is at most a second old;
`await stats_now()` asks for the current ones. If the child dies, its calls lose their media (an
ERROR says so) and a new child serves the next calls; when the parent dies, the child sees the
pair close, sends each call's RTCP BYE and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from voip_sos.aio.rtp_transport import Addr, EventCallback, PortPool, RtpEngine, RtpSession, RtpStats
from voip_sos.config import PortRange
from voip_sos.errors import MediaError
from voip_sos.fd_table import for_ports, reserve
from voip_sos.priority import MEDIA_NICE, MEDIA_RT, raise_priority
from voip_sos.rtp.events import RtpEvent
from voip_sos.rtp.g711 import Codec
from voip_sos.rtp.prompt import Prompt
from voip_sos.rtp.receiver import ReceiveStats

__all__ = ["ProcessRtpEngine", "ProcessRtpSession"]

log = logging.getLogger(__name__)

MAX_MESSAGE = 192 * 1024  # below the default socket buffer: one SEQPACKET message must fit whole
PROMPT_CHUNK = 32 * 1024
LINK_BUFFER_BYTES = 32 * 1024 * 1024
# Linux <asm-generic/socket.h>; Python's socket module does not name them.
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
STATS_BATCH = 100
STATS_INTERVAL_S = 1.0
READY_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
EXIT_TIMEOUT_S = 10.0
MAX_RESTARTS = 20
READS_PER_WAKEUP = 256


def _empty_stats(port: int) -> RtpStats:
    received = ReceiveStats(
        packets=0, octets=0, bytes=0, invalid=0, source=None, ssrc=None, lost=0, jitter_ms=0.0,
        first_at=None, last_at=None,
    )  # fmt: skip
    return RtpStats(port, None, 0, 0, 0, 0, 0, received)


def _grow_buffers(sock: socket.socket) -> None:
    # A surge sends a hundred prompts (~300 kB each) at once: with the default ~200 kB the sender
    # waits for the media process to read, and every call's start waits behind it.
    sizes = ((SO_SNDBUFFORCE, socket.SO_SNDBUF), (SO_RCVBUFFORCE, socket.SO_RCVBUF))
    for force, plain in sizes:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, LINK_BUFFER_BYTES)
        except OSError:  # not root: as far as net.core.[rw]mem_max allows
            sock.setsockopt(socket.SOL_SOCKET, plain, LINK_BUFFER_BYTES)


class _Link:
    """One end of the SEQPACKET pair: whole messages out and in, sockets alongside, never blocking.
    A message that cannot be sent now waits in order for the socket to drain."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_message: Callable[[tuple[Any, ...], list[socket.socket]], None],
        on_eof: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._on_message = on_message
        self._on_eof = on_eof
        self._out: deque[tuple[bytes, Sequence[socket.socket]]] = deque()
        self._writing = False
        self.closed = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)

    def send(self, msg: tuple[Any, ...], socks: Sequence[socket.socket] = ()) -> None:
        """Queue `msg` (and pass `socks`, which this end then closes)."""
        if self.closed:
            for s in socks:
                s.close()
            raise MediaError("media process link is closed")
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_MESSAGE:
            raise MediaError(f"media message {msg[0]!r} too large ({len(data)} bytes)")
        self._out.append((data, socks))
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        while self._out:
            data, socks = self._out[0]
            try:
                if socks:
                    socket.send_fds(self._sock, [data], [s.fileno() for s in socks])
                else:
                    self._sock.send(data)
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self._loop.add_writer(self._sock.fileno(), self._flush)
                return
            except OSError:
                self._eof()
                return
            self._out.popleft()
            for s in socks:
                s.close()  # the other process holds them now
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    def _readable(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                data, fds, _, _ = socket.recv_fds(self._sock, MAX_MESSAGE, 2)
            except BlockingIOError:
                return
            except OSError:
                self._eof()
                return
            if not data:
                self._eof()
                return
            socks = [socket.socket(fileno=fd) for fd in fds]
            try:
                self._on_message(pickle.loads(data), socks)
            except Exception:
                log.exception("media message handling failed")

    def _eof(self) -> None:
        if self.closed:
            return
        self.close()
        self._on_eof()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        if self._writing:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._sock.fileno())
        for _, socks in self._out:
            for s in socks:
                s.close()
        self._out.clear()
        self._sock.close()


# -- the parent ------------------------------------------------------------------------------------


class ProcessRtpSession:
    """A call's media, living in the media process; every method returns at once."""

    def __init__(self, owner: ProcessRtpEngine, sid: int, port: int, on_event: EventCallback | None) -> None:
        self._owner = owner
        self.sid = sid
        self.local_port = port
        self._on_event = on_event
        self.events: asyncio.Queue[RtpEvent] = asyncio.Queue()
        self.closed = False
        self._stats = _empty_stats(port)
        self._prompt: int | None = None
        self._closed_fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stats_waiters: deque[asyncio.Future[RtpStats]] = deque()

    @property
    def local_rtcp_port(self) -> int:
        return self.local_port + 1

    @property
    def stats(self) -> RtpStats:
        """The counters as the media process last reported them (at most a second old; exact once
        closed). `await stats_now()` for the current ones."""
        return self._stats

    async def stats_now(self) -> RtpStats:
        if self.closed:
            await self._wait_closed()
            return self._stats
        fut: asyncio.Future[RtpStats] = asyncio.get_running_loop().create_future()
        self._stats_waiters.append(fut)
        self._owner._send(("stats", self.sid))
        return await asyncio.wait_for(fut, CLOSE_TIMEOUT_S)

    def set_remote(
        self,
        addr: Addr,
        *,
        codec: Codec,
        payload_type: int,
        telephone_event_pt: int | None = None,
        rtcp_addr: Addr | None = None,
    ) -> None:
        self._owner._send(("remote", self.sid, addr, codec, payload_type, telephone_event_pt, rtcp_addr))

    def start(self, prompt: Prompt | None, *, loop: bool = True, gap_s: float = 0.0) -> None:
        self._owner._send(("start", self.sid, self._use(prompt), loop, gap_s))

    def replace_prompt(self, prompt: Prompt, *, loop: bool = True, gap_s: float = 0.0) -> None:
        self._owner._send(("replace", self.sid, self._use(prompt), loop, gap_s))

    def preload(self, prompt: Prompt) -> None:
        """Send `prompt` to the media process now (with the INVITE), not when the call is answered."""
        self._use(prompt)

    def restart_prompt(self) -> None:
        self._owner._send(("restart", self.sid))

    def silence(self) -> None:
        self._owner._send(("silence", self.sid))

    def set_sending(self, sending: bool) -> None:
        self._owner._send(("sending", self.sid, sending))

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        self._owner._send(("dtmf", self.sid, digit, duration_ms))

    async def close(self) -> None:
        """RTCP BYE, sockets closed and the ports given back (once the media process has closed them)."""
        if not self.closed:
            self.closed = True
            self._owner._send(("close", self.sid))
        await self._wait_closed()

    async def _wait_closed(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._closed_fut), CLOSE_TIMEOUT_S)

    def _use(self, prompt: Prompt | None) -> int | None:
        pid = self._owner._prompt_in(prompt) if prompt is not None else None
        if self._prompt is not None:
            self._owner._prompt_out(self._prompt)
        self._prompt = pid
        return pid

    # -- from the media process (on the caller's loop) --

    def _deliver(self, event: RtpEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("rtp event callback failed")
        else:
            self.events.put_nowait(event)

    def _stats_in(self, stats: RtpStats, *, answer: bool) -> None:
        self._stats = stats
        if answer and self._stats_waiters:
            fut = self._stats_waiters.popleft()
            if not fut.done():
                fut.set_result(stats)

    def _ended(self, stats: RtpStats | None) -> None:
        self.closed = True
        if stats is not None:
            self._stats = stats
        if self._prompt is not None:
            self._owner._prompt_out(self._prompt)
            self._prompt = None
        while self._stats_waiters:
            fut = self._stats_waiters.popleft()
            if not fut.done():
                fut.set_result(self._stats)
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)


class ProcessRtpEngine:
    """An `RtpEngine` in a child process (see the module docstring); the caller's side of it."""

    def __init__(
        self,
        *,
        ports: PortRange,
        host: str = "0.0.0.0",
        log_level: str = "info",
        log_format: str = "text",
        realtime: bool = False,
        **engine_args: Any,
    ) -> None:
        """`realtime`: the child runs in the SCHED_RR class (voip_sos/priority.py), not only at a
        raised nice value."""
        self.ports = ports
        self._realtime = realtime
        self.host = host
        self.pool = PortPool(ports, host)
        self._args = dict(engine_args, ports=ports, host=host)
        self._log_settings = (log_level, log_format)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._link: _Link | None = None
        self._ready: asyncio.Future[None] | None = None
        self._sessions: dict[int, ProcessRtpSession] = {}
        self._ids = itertools.count(1)
        self._prompts: dict[int, tuple[Prompt, int]] = {}  # prompt id -> (prompt, sessions using it)
        self._prompt_id: dict[int, int] = {}  # id(prompt) -> prompt id (kept alive by _prompts)
        self._prompt_ids = itertools.count(1)
        self._closing = False
        self._restarts = 0
        self._watch: asyncio.Task[None] | None = None

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        """The media process runs and takes commands (False while a dead one is being replaced)."""
        proc, link = self._proc, self._link
        return proc is not None and proc.returncode is None and link is not None and not link.closed

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._spawn()

    async def _spawn(self) -> None:
        assert self._loop is not None
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (parent_end, child_end):
            _grow_buffers(end)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voip_sos.aio.media_process", str(child_end.fileno()),
                "realtime" if self._realtime else "nice",
                pass_fds=(child_end.fileno(),), stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            child_end.close()
        self._ready = self._loop.create_future()
        self._link = _Link(self._loop, parent_end, self._on_message, self._on_eof)
        self._link.send(("hello", self._args, self._log_settings))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), READY_TIMEOUT_S)
        except (TimeoutError, MediaError) as exc:
            await self._kill()
            raise MediaError(f"media process did not start: {exc}") from exc
        self._watch = asyncio.create_task(self._watch_exit(self._proc), name="media-process")

    def open_now(
        self, *, on_event: EventCallback | None = None, log_context: dict[str, object] | None = None
    ) -> ProcessRtpSession:
        """Bind a port pair now; the media process serves it from its next message on."""
        if self._link is None or self._link.closed:
            raise MediaError("no media process")
        rtp_sock, rtcp_sock, port = self.pool.bind_pair()
        sid = next(self._ids)
        session = ProcessRtpSession(self, sid, port, on_event)
        self._sessions[sid] = session
        try:
            self._link.send(("open", sid, port, log_context or {}), (rtp_sock, rtcp_sock))
        except MediaError:
            self._sessions.pop(sid, None)
            self.pool.release(port)
            raise
        return session

    async def open(
        self, *, on_event: EventCallback | None = None, log_context: dict[str, object] | None = None
    ) -> ProcessRtpSession:
        return self.open_now(on_event=on_event, log_context=log_context)

    async def close(self) -> None:
        """Close every session, then let the media process exit."""
        self._closing = True
        for session in list(self._sessions.values()):
            await session.close()
        if self._link is not None and not self._link.closed:
            with contextlib.suppress(MediaError):
                self._link.send(("exit",))
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), EXIT_TIMEOUT_S)
            except TimeoutError:
                await self._kill()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._link is not None:
            self._link.close()

    # -- internals --

    def _send(self, msg: tuple[Any, ...]) -> None:
        if self._link is None or self._link.closed:
            log.warning("media process gone: command dropped", extra={"command": msg[0]})
            return
        self._link.send(msg)

    def _prompt_in(self, prompt: Prompt) -> int:
        pid = self._prompt_id.get(id(prompt))
        if pid is not None:
            kept, users = self._prompts[pid]
            self._prompts[pid] = (kept, users + 1)
            return pid
        pid = next(self._prompt_ids)
        self._prompt_id[id(prompt)] = pid
        self._prompts[pid] = (prompt, 1)
        pcm = prompt.pcm.tobytes()
        chunks = [pcm[i : i + PROMPT_CHUNK] for i in range(0, len(pcm), PROMPT_CHUNK)] or [b""]
        for i, chunk in enumerate(chunks):
            self._send(("prompt", pid, prompt.name, i, len(chunks), chunk))
        return pid

    def _prompt_out(self, pid: int) -> None:
        known = self._prompts.get(pid)
        if known is None:
            return
        prompt, users = known
        if users > 1:
            self._prompts[pid] = (prompt, users - 1)
        else:
            del self._prompts[pid], self._prompt_id[id(prompt)]
            self._send(("forget", pid))

    def _on_message(self, msg: tuple[Any, ...], socks: list[socket.socket]) -> None:
        for s in socks:
            s.close()  # the child never sends sockets
        kind = msg[0]
        if kind == "event":
            session = self._sessions.get(msg[1])
            if session is not None:
                session._deliver(msg[2])
        elif kind == "stats":
            for sid, stats, answer in msg[1]:
                session = self._sessions.get(sid)
                if session is not None:
                    session._stats_in(stats, answer=answer)
        elif kind == "closed":
            session = self._sessions.pop(msg[1], None)
            if session is not None:
                self.pool.release(session.local_port)
                session._ended(msg[2])
        elif kind == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _on_eof(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(MediaError("media process closed its end"))
        lost = list(self._sessions.values())
        self._sessions.clear()
        self._prompts.clear()
        self._prompt_id.clear()
        for session in lost:
            self.pool.release(session.local_port)
            session._ended(None)
        if lost and not self._closing:
            log.error("media process gone: these calls lost their media", extra={"calls": len(lost)})

    async def _watch_exit(self, proc: asyncio.subprocess.Process) -> None:
        rc = await proc.wait()
        if self._closing:
            return
        if self._link is not None:
            self._link.close()
            self._on_eof()
        while not self._closing and self._restarts < MAX_RESTARTS:
            self._restarts += 1
            log.error("media process ended unexpectedly; starting a new one",
                      extra={"returncode": rc, "restart": self._restarts})  # fmt: skip
            await asyncio.sleep(min(0.1 * self._restarts, 2.0))
            try:
                await self._spawn()
            except MediaError as exc:
                log.error("media process restart failed", extra={"error": str(exc)})
                continue
            return
        if not self._closing:
            log.critical("media process keeps failing: calls get no media")

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()


# -- the child -------------------------------------------------------------------------------------


class _MediaChild:
    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.link = _Link(loop, sock, self.on_message, self.on_eof)
        self.engine: RtpEngine | None = None
        self.sessions: dict[int, RtpSession] = {}
        self.prompts: dict[int, Prompt] = {}
        self.partial: dict[int, list[bytes]] = {}
        self.done = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def on_message(self, msg: tuple[Any, ...], socks: list[socket.socket]) -> None:
        kind = msg[0]
        if kind == "open":
            _, sid, port, context = msg
            if self.engine is None or len(socks) != 2:
                for s in socks:
                    s.close()
                self.link.send(("closed", sid, None))
                return
            for s in socks:
                s.setblocking(False)
            self.sessions[sid] = self.engine.adopt_sockets(
                port, socks[0], socks[1], on_event=lambda ev: self.emit(sid, ev), log_context=context
            )
            return
        for s in socks:
            s.close()
        if kind == "hello":
            self.loop.create_task(self.hello(msg[1], msg[2]))
        elif kind == "prompt":
            _, pid, name, index, count, chunk = msg
            parts = self.partial.setdefault(pid, [])
            parts.append(chunk)
            if index + 1 == count:
                del self.partial[pid]
                self.prompts[pid] = Prompt.from_pcm(b"".join(parts), name=name)
        elif kind == "forget":
            self.prompts.pop(msg[1], None)
        elif kind == "exit":
            self.done.set()
        else:
            self.command(kind, msg)

    def emit(self, sid: int, event: RtpEvent) -> None:
        if not self.link.closed:
            self.link.send(("event", sid, event))

    def command(self, kind: str, msg: tuple[Any, ...]) -> None:
        session = self.sessions.get(msg[1])
        if session is None:
            return
        if kind == "remote":
            _, _, addr, codec, pt, te_pt, rtcp_addr = msg
            session.set_remote(
                addr, codec=codec, payload_type=pt, telephone_event_pt=te_pt, rtcp_addr=rtcp_addr
            )
        elif kind == "start":
            _, _, pid, loop, gap_s = msg
            session.start(self.prompts.get(pid) if pid is not None else None, loop=loop, gap_s=gap_s)
        elif kind == "replace":
            _, _, pid, loop, gap_s = msg
            prompt = self.prompts.get(pid)
            if prompt is not None:
                session.replace_prompt(prompt, loop=loop, gap_s=gap_s)
        elif kind == "restart":
            session.restart_prompt()
        elif kind == "silence":
            session.silence()
        elif kind == "sending":
            session.set_sending(msg[2])
        elif kind == "dtmf":
            session.send_dtmf(msg[2], msg[3])
        elif kind == "stats":
            self.link.send(("stats", [(msg[1], session.stats, True)]))
        elif kind == "close":
            del self.sessions[msg[1]]
            self.spawn(self.close_session(msg[1], session))

    async def hello(self, args: dict[str, Any], log_settings: tuple[str, str]) -> None:
        from voip_sos.gc_pauses import GcWatch, settle
        from voip_sos.logs import setup_logging

        setup_logging(*log_settings)
        reserve(for_ports(args["ports"]), "media")  # see voip_sos/fd_table.py
        self.engine = RtpEngine(**args)
        settle()
        GcWatch().install()  # long pauses are logged: every stream stops during one
        self.link.send(("ready",))
        self.spawn(self.report())

    async def report(self) -> None:
        while not self.done.is_set():
            await asyncio.sleep(STATS_INTERVAL_S)
            items = [(sid, s.stats, False) for sid, s in self.sessions.items()]
            for i in range(0, len(items), STATS_BATCH):
                self.link.send(("stats", items[i : i + STATS_BATCH]))

    async def close_session(self, sid: int, session: RtpSession) -> None:
        try:
            await session.close()
        finally:
            if not self.link.closed:
                self.link.send(("closed", sid, session.stats))

    def spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_eof(self) -> None:
        self.done.set()

    async def run(self) -> int:
        await self.done.wait()
        # Exit, or the parent died: every call still open gets its RTCP BYE, then the sockets close.
        for sid, session in list(self.sessions.items()):
            self.sessions.pop(sid, None)
            await self.close_session(sid, session)
        for task in list(self.tasks):
            task.cancel()
        self.link.close()
        return 0


async def _child(fd: int) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # The parent decides when media stops (after its calls hung up); it ends this process by
        # closing the pair, even when it is killed itself.
        loop.add_signal_handler(sig, lambda: None)
    child = _MediaChild(loop, socket.socket(fileno=fd))
    return await child.run()


def main(argv: list[str]) -> int:
    # Pacing is the one place where a late packet is heard: ahead of renders and call set-up.
    raise_priority("media", nice=MEDIA_NICE, realtime=MEDIA_RT if argv[1:2] == ["realtime"] else None)
    return asyncio.run(_child(int(argv[0])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
