"""Running real SIP peers in tests: free ports, processes started and stopped by PID, SIPp runs,
and a UDP relay that can drop chosen packets (to make loss happen on a real socket path).

Reusable by every area: `free_port()`, `Peer` (context manager around one process),
`Sipp` (one SIPp scenario run), `UdpRelay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
Addr = tuple[str, int]


def free_port(host: str = "127.0.0.1", both: bool = True) -> int:
    """A port free for UDP (and TCP when `both`) right now on `host`."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            if not both:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError("no free port")


def free_port_pair(host: str = "127.0.0.1") -> int:
    """An even port with the odd one above it free (RTP + RTCP)."""
    for _ in range(200):
        port = free_port(host, both=False)
        if port % 2 == 0 and port < 65535:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((host, port + 1))
                except OSError:
                    continue
                return port
    raise OSError("no free port pair")


def require_tool(name: str) -> str:
    """The path of a tool the test needs; a missing tool is a failure, never a skip."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed (scripts/setup.sh installs it)")
    return path


class Peer:
    """One external process, stopped by its PID (process group) on exit, also on failure."""

    def __init__(self, argv: Sequence[str], cwd: str | Path | None = None, name: str = "") -> None:
        self.argv = list(argv)
        self.cwd = str(cwd) if cwd else None
        self.name = name or Path(argv[0]).name
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self) -> Peer:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    async def wait_async(self, timeout_s: float) -> int:
        """Wait for the process without blocking the event loop (polls; bounded)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout_s} s:\n{self.output()[-3000:]}")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=3)

    def __enter__(self) -> Peer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._log.close()
        if t is None:
            with contextlib.suppress(OSError):
                os.unlink(self._log.name)


class Sipp(Peer):
    """One SIPp scenario (`tests/sipp/NAME.xml`) as UAS (`remote` None) or UAC towards `remote`."""

    def __init__(
        self,
        scenario: str,
        port: int,
        remote: Addr | None = None,
        *,
        calls: int = 1,
        service: str = "120",
        keys: dict[str, str] | None = None,
        extra: Sequence[str] = (),
        timeout_s: int = 30,
    ) -> None:
        argv = [
            require_tool("sipp"),
            "-sf", str(SIPP_DIR / f"{scenario}.xml"),
            "-i", "127.0.0.1", "-p", str(port),
            "-m", str(calls), "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error",
            "-s", service, "-trace_err", "-trace_msg",
        ]  # fmt: skip
        for k, v in (keys or {}).items():
            argv += ["-key", k, v]
        argv += list(extra)
        if remote is not None:
            argv.append(f"{remote[0]}:{remote[1]}")
        self.workdir = tempfile.mkdtemp(prefix=f"sipp-{scenario}-")
        super().__init__(argv, cwd=self.workdir, name=f"sipp-{scenario}")
        self.port = port
        self._kept: str | None = None

    def messages(self) -> str:
        """SIPp's message trace (`-trace_msg`): everything it sent and received."""
        if self._kept is not None:
            return self._kept
        found = list(Path(self.workdir).glob("*_messages.log"))
        return found[0].read_text(errors="replace") if found else ""

    def errors(self) -> str:
        found = list(Path(self.workdir).glob("*_errors.log"))
        return found[0].read_text(errors="replace") if found else ""

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        super().__exit__(t, e, tb)
        self._kept = self.messages()
        if t is None:
            shutil.rmtree(self.workdir, ignore_errors=True)


async def wait_udp_listening(port: int, timeout_s: float = 5.0, peer: Peer | None = None) -> None:
    """Wait until something listens on UDP 127.0.0.1:port (by trying to bind it ourselves);
    fail at once, with its output, if `peer` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if peer is not None and peer.proc is not None and peer.proc.poll() is not None:
            raise AssertionError(f"{peer.name} exited with {peer.proc.returncode}:\n{peer.output()[-3000:]}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"nothing listens on udp {port}")


class UdpRelay(asyncio.DatagramProtocol):
    """Forwards datagrams client <-> target on real sockets; `drop(data)` True loses one.
    Every datagram is recorded with its loop time and direction ('out' to target, 'in' back)."""

    def __init__(self, target: Addr, drop: Callable[[bytes, str], bool] | None = None) -> None:
        self.target = target
        self.drop = drop
        self.client: Addr | None = None
        self.log: list[tuple[float, str, bytes, bool]] = []
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(cls, target: Addr, drop: Callable[[bytes, str], bool] | None = None) -> UdpRelay:
        loop = asyncio.get_running_loop()
        relay = cls(target, drop)
        await loop.create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", 0))
        return relay

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        assert self.transport is not None
        now = asyncio.get_running_loop().time()
        direction = "in" if addr == self.target else "out"
        if direction == "out":
            self.client = addr
        dropped = bool(self.drop and self.drop(data, direction))
        self.log.append((now, direction, data, dropped))
        if dropped:
            return
        dest = self.target if direction == "out" else self.client
        if dest is not None:
            self.transport.sendto(data, dest)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
