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


async def wait_tcp_listening(port: int, timeout_s: float = 5.0, peer: Peer | None = None) -> None:
    """Wait until 127.0.0.1:port accepts TCP connections."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if peer is not None and peer.proc is not None and peer.proc.poll() is not None:
            raise AssertionError(f"{peer.name} exited with {peer.proc.returncode}:\n{peer.output()[-3000:]}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return
    raise TimeoutError(f"nothing listens on tcp {port}")


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


KAMAILIO_CFG = Path(__file__).resolve().parent / "kamailio" / "kamailio.cfg"
DBTEXT_TEMPLATE = Path("/usr/share/kamailio/dbtext/kamailio")


class Kamailio(Peer):
    """Kamailio as registrar + authenticating proxy with Record-Route on 127.0.0.1:`port`
    (UDP and TCP); `users` maps user name -> password (realm and domain are 127.0.0.1)."""

    def __init__(self, port: int, users: dict[str, str], *, smsc: Addr | None = None) -> None:
        """With `smsc`, every MESSAGE is relayed there (the PBX's SMS gateway) instead of to a
        registered user."""
        import hashlib

        self.workdir = tempfile.mkdtemp(prefix="kamailio-")
        db = Path(self.workdir) / "db"
        shutil.copytree(DBTEXT_TEMPLATE, db)
        realm = "127.0.0.1"

        def md5(s: str) -> str:
            return hashlib.md5(s.encode()).hexdigest()

        with (db / "subscriber").open("a") as f:
            for i, (user, pw) in enumerate(users.items(), 1):
                # db_text rejects the whole table if ha1/ha1b are empty (PEERS.md).
                f.write(
                    f"{i}:{user}:{realm}:{pw}:{md5(f'{user}:{realm}:{pw}')}:{md5(f'{user}@{realm}:{realm}:{pw}')}\n"
                )
        cfg = KAMAILIO_CFG.read_text().replace("@PORT@", str(port)).replace("@DB_DIR@", str(db))
        cfg = cfg.replace("@REALM@", realm)  # no-op unless the template uses it
        if smsc is not None:
            route = (
                '    if (is_method("MESSAGE")) {\n'
                f'        $du = "sip:{smsc[0]}:{smsc[1]}";\n'
                '        xlog("L_INFO", "MESSAGE for $rU to the SMS centre\\n");\n'
                "        t_relay();\n"
                "        exit;\n"
                "    }\n"
            )
            anchor = '    if (!lookup("location")) {'
            assert anchor in cfg
            cfg = cfg.replace(anchor, route + anchor, 1)
        cfg_path = Path(self.workdir) / "kamailio.cfg"
        cfg_path.write_text(cfg)
        argv = [require_tool("kamailio"), "-f", str(cfg_path), "-DD", "-E", "-Y", self.workdir, "-P",
                str(Path(self.workdir) / "kamailio.pid")]  # fmt: skip
        super().__init__(argv, cwd=self.workdir, name="kamailio")
        self.port = port

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        super().__exit__(t, e, tb)
        if t is None:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Baresip(Peer):
    """baresip as an automated phone (PEERS.md): auto-answers, records what it hears into
    `record_dir` (sndfile), plays `audio_source` (a WAV) or nothing, and takes commands over
    ctrl_tcp (`command()`). With `registrar` it registers there as `user` with `password`."""

    def __init__(
        self,
        port: int,
        user: str = "bob",
        *,
        registrar: Addr | None = None,
        password: str = "",
        audio_source: str | Path | None = None,
        record_dir: str | Path | None = None,
    ) -> None:
        self.workdir = tempfile.mkdtemp(prefix="baresip-")
        self.ctrl_port = free_port(both=False)
        source = f"aufile,{audio_source}" if audio_source else "aubridge,nil"
        modules = ["g711.so", "aubridge.so", "aufile.so", "menu.so", "account.so", "ctrl_tcp.so"]
        if record_dir:
            modules.append("sndfile.so")
        lines = [
            "poll_method\t\tepoll",
            f"sip_listen\t\t127.0.0.1:{port}",
            "net_interface\t\t127.0.0.1",
            "audio_player\t\taubridge,nil",
            f"audio_source\t\t{source}",
            "module_path\t\t/usr/lib/baresip/modules",
            *[f"module\t\t\t{m}" for m in modules],
            f"ctrl_tcp_listen\t\t127.0.0.1:{self.ctrl_port}",
        ]
        if record_dir:
            lines.append(f"snd_path\t\t{record_dir}")
        Path(self.workdir, "config").write_text("\n".join(lines) + "\n")
        if registrar:
            account = (
                f'<sip:{user}@127.0.0.1>;auth_pass={password};outbound="sip:{registrar[0]}:{registrar[1]}";'
                "regint=300;answermode=auto"
            )
        else:
            account = f"<sip:{user}@127.0.0.1:{port}>;regint=0;answermode=auto"
        Path(self.workdir, "accounts").write_text(account + "\n")
        # Line-buffered output: what baresip prints (keys, received MESSAGEs) is read back by tests.
        argv = [require_tool("stdbuf"), "-oL", "-eL", require_tool("baresip"), "-f", self.workdir]
        super().__init__(argv, cwd=self.workdir, name="baresip")
        self.port = port

    async def wait_output(self, text: str, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"baresip exited:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"baresip never printed {text!r}:\n{self.output()[-3000:]}")
            await asyncio.sleep(0.05)

    async def command(self, command: str, params: str = "") -> None:
        """Send one ctrl_tcp command (netstring-framed JSON)."""
        import json

        payload = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
        try:
            writer.write(f"{len(payload)}:".encode() + payload + b",")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(4096), 1.0)
        finally:
            writer.close()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        super().__exit__(t, e, tb)
        if t is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
