"""The SOS listener in a process of its own, so a RECEIPT never waits behind incident work.

A surge of presses means thousands of calls, SMS and renders starting at once; on one event loop
(and one GIL) with them, the listener's RECEIPTs waited seconds (bench/sos_surge.py). Here `serve`
binds the SOS socket itself, then hands it to a child process that runs the whole receive path
(`SosListenerProtocol`: lookup, durable record, RECEIPT, STATUS resends) with its own database
connections. The two talk over a Unix socket pair in length-prefixed pickles (trusted: parent and
child are the same program):

    parent -> child   hello (config), status (incident, STB, code, detail), close
    child -> parent   ready (bound address), recorded (request, result), counters (with RECEIPT
                      latencies and garbage-collector pauses), closed

The parent keeps its copy of the SOS socket open and never reads it: if the child dies, presses
wait in the kernel's buffer while the parent starts a new child on the same socket (restarts are
bounded and logged as errors). When the parent dies, even by `kill -9`, the child sees its end of
the pair close, stops reading, records what it has taken and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from voip_sos.config import Config, SosConfig
from voip_sos.errors import VoipSosError
from voip_sos.incidents.recording import Recorded, RequestRecord
from voip_sos.priority import MEDIA_NICE, MEDIA_RT, raise_priority
from voip_sos.sos.listener import ListenerSettings
from voip_sos.sos.wire import StatusCode

__all__ = ["ListenerProcess", "ListenerProcessError", "listener_settings"]

logger = logging.getLogger(__name__)

_FRAME = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024
READY_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 30.0
# The socket may still be held by a child of a `serve` that was just killed: it exits within ms.
BIND_RETRY_S = 5.0
RCVBUF_BYTES = 8 * 1024 * 1024
COUNTERS_INTERVAL_S = 1.0
MAX_RESTARTS = 20
RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)

OnRecorded = Callable[[RequestRecord, Recorded], Awaitable[None] | None]


def listener_settings(sos: SosConfig) -> ListenerSettings:
    return ListenerSettings(
        trust_carried_ip=sos.trust_carried_ip,
        operator_key=bytes.fromhex(sos.operator_key) if sos.operator_key else None,
        check_clock=sos.check_clock,
        clock_window_s=sos.clock_window_s,
        rate_per_s=sos.rate_per_s,
        burst=sos.burst,
        max_pending=sos.max_pending,
    )


class ListenerProcessError(VoipSosError):
    """The SOS listener process could not be started."""


def _write(writer: asyncio.StreamWriter, *msg: Any) -> None:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_FRAME.pack(len(data)) + data)


async def _send(writer: asyncio.StreamWriter, *msg: Any) -> None:
    _write(writer, *msg)
    await writer.drain()


async def _recv(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None when the other side has gone."""
    try:
        head = await reader.readexactly(_FRAME.size)
        (size,) = _FRAME.unpack(head)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes")
        msg = pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    if not isinstance(msg, tuple) or not msg:
        raise ValueError(f"unexpected message {msg!r:.80}")
    return msg


async def _bind_udp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + BIND_RETRY_S
    while True:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or port == 0 or time.monotonic() > deadline:
                problem = f"sos.listen: cannot bind {host}:{port}: {exc.strerror}"
                raise ListenerProcessError([problem]) from exc
            await asyncio.sleep(0.05)
            continue
        with contextlib.suppress(OSError):
            # A surge of presses (and a flood beside it) must queue in the kernel, not be dropped there.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.setblocking(False)
        return sock


class ListenerProcess:
    """Parent side: owns the SOS socket, runs and supervises the listener child."""

    def __init__(
        self,
        cfg: Config,
        on_recorded: OnRecorded,
        on_latency: Callable[[float], None] | None = None,
        on_restart: Callable[[], Awaitable[object]] | None = None,
        on_gc_pause: Callable[[int, float], None] | None = None,
    ) -> None:
        """`on_restart` runs after a new child replaced one that died: a child can die between
        committing an SOS and telling this process, and that incident must still be started.
        `on_gc_pause(generation, seconds)` gets the child's garbage-collector pauses."""
        self._cfg = cfg
        self._on_recorded = on_recorded
        self._on_latency = on_latency
        self._on_gc_pause = on_gc_pause
        self._on_restart = on_restart
        self._udp: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._closed = asyncio.Event()
        self._restarts = 0
        self.address: tuple[str, int] = ("", 0)
        self.counters: dict[str, int] = {}
        """The child's reject and request counters, as last reported (they survive a restart)."""
        self._base: dict[str, int] = {}

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and not self._closing

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        listen = self._cfg.sos.listen
        self._udp = await _bind_udp(listen.host, listen.port)
        host, port = self._udp.getsockname()[:2]
        self.address = (host, port)
        await self._spawn()

    async def _spawn(self) -> None:
        assert self._udp is not None
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "voip_sos.aio.listener_process",
                str(child_end.fileno()), str(self._udp.fileno()),
                "realtime" if self._cfg.sos.realtime else "nice",
                pass_fds=(child_end.fileno(), self._udp.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            child_end.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_end)
        self._writer = writer
        await _send(writer, "hello", self._cfg)
        try:
            msg = await asyncio.wait_for(_recv(reader), READY_TIMEOUT_S)
        except TimeoutError:
            msg = None
        if msg is None or msg[0] != "ready":
            await self._kill()
            raise ListenerProcessError([f"SOS listener process did not start (said {msg!r:.200})"])
        self._reader_task = asyncio.create_task(self._read(reader), name="sos-listener-link")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                msg = await _recv(reader)
            except Exception:
                logger.exception("bad message from the SOS listener process")
                msg = None
            if msg is None:
                break
            kind = msg[0]
            if kind == "recorded":
                self._notify_now(msg[1], msg[2])
            elif kind in ("counters", "closed"):
                self.counters = {k: self._base.get(k, 0) + v for k, v in msg[1].items()}
                if self._on_latency is not None:
                    for seconds in msg[2]:
                        self._on_latency(seconds)
                if self._on_gc_pause is not None:
                    for generation, seconds in msg[3]:
                        self._on_gc_pause(generation, seconds)
                if kind == "closed":
                    break
        if self._closing:
            self._closed.set()
            return
        rc = await self._wait_exit()
        self._base = dict(self.counters)
        await self._restart(rc)

    async def _restart(self, rc: int | None) -> None:
        while not self._closing and self._restarts < MAX_RESTARTS:
            pause = RESTART_BACKOFF_S[min(self._restarts, len(RESTART_BACKOFF_S) - 1)]
            self._restarts += 1
            logger.error(
                "SOS listener process ended unexpectedly; starting a new one on the same socket",
                extra={"returncode": rc, "restart": self._restarts, "pause_s": pause},
            )
            await asyncio.sleep(pause)
            try:
                await self._spawn()
            except Exception as exc:
                logger.error("SOS listener process restart failed", extra={"error": str(exc)})
                continue
            logger.warning("SOS listener process restarted", extra={"pid": self.pid})
            if self._on_restart is not None:
                try:
                    await self._on_restart()
                except Exception:
                    logger.exception("taking over incidents after the listener restart failed")
            return
        if not self._closing:
            logger.critical("SOS listener keeps failing, no more restarts: SOS requests go unanswered")
        self._closed.set()

    async def _wait_exit(self) -> int | None:
        if self._proc is None:
            return None
        try:
            return await asyncio.wait_for(self._proc.wait(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            await self._kill()
            return self._proc.returncode

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()

    def _notify_now(self, rec: RequestRecord, res: Recorded) -> None:
        # Called in place (no task, no loop turn): the runner sends the INVITEs from inside it.
        try:
            out = self._on_recorded(rec, res)
        except Exception:
            logger.exception("on_recorded hook failed", extra={"incident": res.incident_id})
            return
        if out is not None:
            self._spawn_task(self._finish(out, res))

    async def _finish(self, out: Awaitable[None], res: Recorded) -> None:
        try:
            await out
        except Exception:
            logger.exception("on_recorded hook failed", extra={"incident": res.incident_id})

    def _spawn_task(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send_status(self, incident_id: int, ip: str, status: StatusCode, detail: str | None = None) -> None:
        """Tell the STB how its incident is going (the child resends it until SEEN)."""
        if self._writer is None or self._writer.is_closing():
            logger.warning("STATUS not sent: no SOS listener", extra={"incident": incident_id, "stb": ip})
            return
        # Written at once, in order; the child reads far faster than incidents change.
        _write(self._writer, "status", incident_id, ip, status, detail)

    async def close(self) -> None:
        """No new requests; the child records and answers what it has taken, then exits."""
        if self._closing:
            return
        self._closing = True
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                await _send(self._writer, "close")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), CLOSE_TIMEOUT_S)
        await self._wait_exit()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        if self._writer is not None:
            self._writer.close()
        if self._udp is not None:
            self._udp.close()


# -- the child -------------------------------------------------------------------------------------


async def _child(ctrl_fd: int, udp_fd: int) -> int:
    from voip_sos.aio.sos_listener import SosListenerProtocol, start_sos_listener
    from voip_sos.directory import Directory
    from voip_sos.gc_pauses import GcWatch, settle
    from voip_sos.incidents.store import IncidentStore
    from voip_sos.logs import setup_logging

    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=ctrl_fd))
    hello = await _recv(reader)
    if hello is None or hello[0] != "hello":
        return 2
    cfg: Config = hello[1]
    setup_logging(cfg.log.level, cfg.log.format)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # The parent decides when the listener stops (after the runner no longer needs STATUS);
        # a signal to the whole process group stops it via the parent, or here by EOF.
        loop.add_signal_handler(sig, lambda: None)

    def recorded(rec: RequestRecord, res: Recorded) -> None:
        # Never wait for the parent to read: a parent busy starting a thousand incidents must not
        # hold up the next batch's RECEIPTs. The transport buffers; presses are rate-limited.
        # Heartbeats only touch the STB's last-seen time: nothing for serve to act on.
        if res.incident_id is not None and not res.again and rec.kind != "heartbeat":
            _write(writer, "recorded", rec, res)

    # Everything on this process's one thread: its loop does nothing but the RECEIPT path, and
    # thread hops cost GIL hand-offs on it (datagrams wait in the kernel while a batch commits).
    directory = await Directory.open(cfg.directory.url, migrate=False, inline_lookup=True)
    store = IncidentStore(directory.engine, inline=True)
    proto: SosListenerProtocol | None = None
    try:
        udp = socket.socket(fileno=udp_fd)
        proto = await start_sos_listener(
            "", 0, listener_settings(cfg.sos), directory, store, recorded, sock=udp
        )
        # Start-up's objects (SQLAlchemy's tables and caches, the settings) are never walked again.
        settle()
        gc_watch = GcWatch().install()
        await _send(writer, "ready", proto.address)

        async def report() -> None:
            last: dict[str, int] = {}
            while not stop.is_set():
                await asyncio.sleep(COUNTERS_INTERVAL_S)
                now = dict(proto.core.counters)
                latencies, proto.receipt_latencies = proto.receipt_latencies, []
                pauses = gc_watch.take()
                if now != last or latencies or pauses:
                    _write(writer, "counters", now, latencies, pauses)
                    last = now

        reporter = asyncio.create_task(report())
        while True:
            msg = await _recv(reader)
            if msg is None or msg[0] == "close":
                break
            if msg[0] == "status":
                _, incident_id, ip, status, detail = msg
                try:
                    proto.send_status(incident_id, ip, status, detail)
                except VoipSosError as exc:
                    # Known only once the STB has spoken to this process: the TV learns at its next contact.
                    logger.warning(
                        "STATUS not sent", extra={"incident": incident_id, "stb": ip, "reason": str(exc)}
                    )
        stop.set()
        reporter.cancel()
        await proto.close()
        with contextlib.suppress(ConnectionError):
            await _send(writer, "closed", dict(proto.core.counters), proto.receipt_latencies, gc_watch.take())
        return 0
    finally:
        await store.aclose()
        await directory.close()


def main(argv: list[str]) -> int:
    ctrl_fd, udp_fd = int(argv[0]), int(argv[1])
    # The RECEIPT path is the one place where milliseconds are promised: ahead of renders and calls.
    realtime = MEDIA_RT if argv[2:3] == ["realtime"] else None
    raise_priority("sos-listener", nice=MEDIA_NICE, realtime=realtime)
    # Each request hops loop -> lookup thread -> loop -> writer thread -> loop; every hop waits for
    # the GIL, by default up to 5 ms.
    sys.setswitchinterval(0.0005)
    return asyncio.run(_child(ctrl_fd, udp_fd))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
