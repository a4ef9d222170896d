"""`voip-sos serve` as a real process: kill -9 durability, SIGTERM, two backends on PostgreSQL, fuzzing."""

from __future__ import annotations

import ast
import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import CLI
from tests.peers import free_port
from tests.sos.relay import start_relay
from tests.sos.sos_support import provision, secret_of, stb_ip
from voip_sos.directory import Directory
from voip_sos.directory.schema import upgrade
from voip_sos.incidents.store import IncidentStore
from voip_sos.sos.wire import Message, MsgType, encode, parse
from voip_sos.stb.aio import open_stb_client
from voip_sos.stb.events import ReceiptReceived, RequestTimedOut

READY_TIMEOUT_S = 30.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """One `voip-sos serve` process with its own config file and log."""

    def __init__(
        self, workdir: Path, url: str, name: str = "serve", sos_extra: str = "", emergency_extra: str = ""
    ) -> None:
        self.port = free_udp_port()
        self.workdir = workdir
        self.config = workdir / f"{name}.yaml"
        # The whole backend runs: its SIP, RTP and HTTP sides get loopback ports of their own, and
        # its calls go to a proxy port nobody listens on (these tests are about the SOS side).
        sip, rtp = free_udp_port(), 30000 + (self.port % 150) * 200
        self.config.write_text(
            f"directory:\n  url: {url}\nsos:\n  listen: 127.0.0.1:{self.port}\n{sos_extra}"
            f"sip:\n  listen: 127.0.0.1:{sip}\n  proxy: 127.0.0.1:{free_udp_port()}\n  domain: 127.0.0.1\n"
            f"rtp:\n  ports: {rtp}-{rtp + 199}\nhttp:\n  listen: 127.0.0.1:{free_port()}\n"
            f"emergency:\n  center: '120'\n  test_number: '9999'\n{emergency_extra}"
            f"voice:\n  cache_dir: {workdir / 'prompts'}\n",
            encoding="utf-8",
        )
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOIP_SOS_")}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(CLI), "--config", str(self.config), "serve"],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if "SOS listener ready" in self.log.read_text(encoding="utf-8", errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"serve did not start:\n{self.log.read_text(encoding='utf-8', errors='replace')}"
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextmanager
def serving(*servers: Serve) -> Iterator[None]:
    try:
        for s in servers:
            s.start()
        yield
    finally:
        for s in servers:
            s.kill()


async def _provisioned(url: str, n: int) -> None:
    await upgrade(url)
    d = await Directory.open(url, migrate=False)
    try:
        await provision(d, n)
    finally:
        await d.close()


async def _incidents(url: str) -> tuple[int, list[list[str]]]:
    d = await Directory.open(url, migrate=False)
    try:
        store = IncidentStore(d.engine)
        items = await store.list()
        return len(items), [[e.kind for e in await store.events(i.id)] for i in items]
    finally:
        await d.close()


async def test_kill_9_right_after_receipt_loses_nothing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    await _provisioned(url, 3)
    serve = Serve(tmp_path, url)
    with serving(serve):
        c = await open_stb_client(stb_ip(1), secret_of(1), [serve.address])
        try:
            ans = await c.request(MsgType.SOS)
            serve.kill()  # SIGKILL the instant the RECEIPT is in
        finally:
            c.close()
    assert isinstance(ans, ReceiptReceived)
    count, logs = await _incidents(url)
    assert count == 1 and logs[0][:2] == ["sos_received", "incident_opened"]
    with serving(serve):  # after a restart the press joins the same, still open incident
        c = await open_stb_client(stb_ip(1), secret_of(1), [serve.address])
        try:
            again = await c.request(MsgType.SOS)
        finally:
            c.close()
        assert isinstance(again, ReceiptReceived) and again.incident_id == ans.incident_id
        assert serve.stop() == 0  # SIGTERM: clean exit
    log = serve.log.read_text(encoding="utf-8")
    assert "stopping: finishing requests in flight" in log and " stopped " in log


async def test_a_killed_listener_process_is_replaced_and_the_press_still_starts_its_incident(
    tmp_path: Path,
) -> None:
    """kill -9 of serve's SOS listener process (not of serve): serve starts a new one on the same
    socket, the press sent meanwhile waits in the kernel or is retransmitted, gets its RECEIPT, and
    its incident is started."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    await _provisioned(url, 3)
    serve = Serve(tmp_path, url)
    with serving(serve):
        text = serve.log.read_text(encoding="utf-8")
        child = int(re.search(r"SOS listener ready .*pid=(\d+)", text).group(1))  # type: ignore[union-attr]
        os.kill(child, signal.SIGKILL)
        c = await open_stb_client(stb_ip(2), secret_of(2), [serve.address], give_up_s=20)
        try:
            ans = await c.request(MsgType.SOS)
        finally:
            c.close()
        assert isinstance(ans, ReceiptReceived)
        log = serve.log.read_text(encoding="utf-8")
        assert "SOS listener process ended unexpectedly" in log
        restarted = re.search(r"SOS listener process restarted .*pid=(\d+)", log)
        assert restarted is not None and int(restarted.group(1)) != child
        deadline = time.monotonic() + 10
        while "incident started" not in serve.log.read_text(encoding="utf-8"):
            assert time.monotonic() < deadline, serve.log.read_text(encoding="utf-8")
            await asyncio.sleep(0.1)
        assert serve.stop() == 0
    count, _ = await _incidents(url)
    assert count == 1


async def test_sigterm_during_a_surge_keeps_every_receipt_recorded(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    await _provisioned(url, 60)
    serve = Serve(tmp_path, url)
    with serving(serve):
        clients = [
            await open_stb_client(stb_ip(i), secret_of(i), [serve.address], give_up_s=3) for i in range(60)
        ]
        try:
            presses = [asyncio.ensure_future(c.request(MsgType.SOS)) for c in clients]
            await asyncio.wait(presses, return_when=asyncio.FIRST_COMPLETED)
            assert serve.proc is not None
            os.kill(serve.proc.pid, signal.SIGTERM)  # in the middle of the surge
            answers = await asyncio.gather(*presses)
        finally:
            for c in clients:
                c.close()
        assert serve.proc.wait(timeout=20) == 0
    receipts = {a.incident_id for a in answers if isinstance(a, ReceiptReceived)}
    assert receipts, "nothing was answered before the SIGTERM"
    d = await Directory.open(url, migrate=False)
    try:
        recorded = {i.id for i in await IncidentStore(d.engine).list(limit=1000)}
    finally:
        await d.close()
    assert receipts <= recorded  # every RECEIPT stands for a committed incident
    assert "Traceback" not in serve.log.read_text(encoding="utf-8")


@pytest.mark.postgres
async def test_two_backends_on_postgresql_failover_and_one_incident(
    tmp_path: Path, pg_database_url: str
) -> None:
    url = pg_database_url
    await _provisioned(url, 3)
    a, b = Serve(tmp_path, url, "a"), Serve(tmp_path, url, "b")
    # Primary down: after three unanswered tries the STB turns to the secondary.
    with serving(b):
        c = await open_stb_client(stb_ip(0), secret_of(0), [a.address, b.address])
        try:
            ans = await c.request(MsgType.SOS)
        finally:
            c.close()
        assert isinstance(ans, ReceiptReceived) and ans.backend == b.address and ans.tries == 4
    # Both up, the primary's RECEIPTs lost on the way back: A records it, the retransmission
    # reaching B finds the request id already recorded, and B answers with the same incident.
    with serving(a, b):
        relay = await start_relay(a.address, loss_up=0.0, loss_down=1.0)
        c = await open_stb_client(stb_ip(1), secret_of(1), [relay.address, b.address])
        try:
            ans = await c.request(MsgType.SOS)
        finally:
            c.close()
            relay.close()
        assert isinstance(ans, ReceiptReceived) and ans.backend == b.address
        assert relay.counts["down"] >= 3  # A answered every try it got
        # The same datagram reaching both at once: one incident, the same id from both.
        data = encode(
            Message(MsgType.SOS, os.urandom(16), 9, int(time.time() * 1000), stb_ip(2)), secret_of(2)
        )
        for _ in range(2):  # the second round is a replay: both answer from what they recorded
            receipts = await asyncio.get_running_loop().run_in_executor(
                None, _send_to_both, data, stb_ip(2), [a.address, b.address]
            )
            assert set(receipts) == {a.address, b.address}
            assert len(set(receipts.values())) == 1
    count, logs = await _incidents(url)
    assert count == 3
    assert all(log.count("sos_received") == 1 and log.count("incident_opened") == 1 for log in logs)


@pytest.mark.postgres
async def test_a_restarted_backend_leaves_the_others_incidents_and_takes_a_dead_ones(
    tmp_path: Path, pg_database_url: str
) -> None:
    url = pg_database_url
    await _provisioned(url, 2)
    hold = "  takeover_s: 2\n"
    a, b = Serve(tmp_path, url, "a", emergency_extra=hold), Serve(tmp_path, url, "b", emergency_extra=hold)
    a_id, b_id = (f"{socket.gethostname()}:{s.port}" for s in (a, b))
    d = await Directory.open(url, migrate=False)
    store = IncidentStore(d.engine)

    async def runner_and_resumes(incident: int) -> tuple[str | None, list[object]]:
        runner, _ = await store.runner_of(incident)
        resumed = [
            e.detail.get("runner") for e in await store.events(incident) if e.kind == "incident_resumed"
        ]
        return runner, resumed

    try:
        with serving(a, b):
            c = await open_stb_client(stb_ip(0), secret_of(0), [a.address])
            try:
                ans = await c.request(MsgType.SOS)
            finally:
                c.close()
            assert isinstance(ans, ReceiptReceived) and ans.backend == a.address
            incident = ans.incident_id
            deadline = time.monotonic() + 10
            while (await store.runner_of(incident))[0] != a_id:
                assert time.monotonic() < deadline, "A never took its incident"
                await asyncio.sleep(0.1)

            # B restarts while A runs the incident: B leaves it alone (before: B resumed it and
            # called everybody a second time).
            b.stop()
            b.start()
            await asyncio.sleep(3.0)  # longer than takeover_s: A kept renewing
            assert await runner_and_resumes(incident) == (a_id, [])

            # A dies: once its hold ran out, B takes the incident over and resumes it.
            a.kill()
            deadline = time.monotonic() + 15
            while (await runner_and_resumes(incident))[1] != [b_id]:
                assert time.monotonic() < deadline, "B never took over the dead backend's incident"
                await asyncio.sleep(0.2)
            assert (await store.runner_of(incident))[0] == b_id
            assert "taking over an incident whose backend stopped renewing its hold" in b.log.read_text()
    finally:
        await d.close()


def _send_to_both(data: bytes, src: str, backends: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Send one datagram to every backend at once; the incident id each one's RECEIPT names."""
    got: dict[tuple[str, int], int] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(5.0)
        for backend in backends:
            s.sendto(data, backend)
        while len(got) < len(backends):
            reply, addr = s.recvfrom(2048)
            msg = parse(reply)
            if msg.type is MsgType.RECEIPT and msg.incident_id is not None:
                got[(addr[0], addr[1])] = msg.incident_id
    return got


def _heartbeat_round_trip(target: tuple[str, int]) -> None:
    ip = stb_ip(9)
    data = encode(Message(MsgType.HEARTBEAT, os.urandom(16), 1, int(time.time() * 1000), ip), secret_of(9))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        s.settimeout(0.5)
        for _ in range(20):
            s.sendto(data, target)
            try:
                if parse(s.recv(2048)).type is MsgType.RECEIPT:
                    return
            except TimeoutError:
                continue
    raise AssertionError("serve stopped answering during the fuzzing")


def _fuzz(target: tuple[str, int], templates: dict[str, bytes], n: int, seed: int) -> None:
    rng = random.Random(seed)
    socks = {ip: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for ip in [*templates, "127.0.250.1"]}
    try:
        for ip, s in socks.items():
            s.bind((ip, 0))
        ips = list(socks)
        for i in range(n):
            ip = ips[i % len(ips)]
            if ip in templates and i % 3:
                d = bytearray(templates[ip])
                for _ in range(rng.randint(1, 4)):
                    d[rng.randrange(len(d))] ^= rng.randint(1, 255)
                if rng.random() < 0.2:
                    d = (
                        d[: rng.randrange(len(d))]
                        if rng.random() < 0.5
                        else d + rng.randbytes(rng.randint(1, 40))
                    )
                data = bytes(d)
            else:
                data = rng.randbytes(rng.randint(0, 1300))
                if rng.random() < 0.5 and data:
                    data = b"\x01" + data[1:]
            socks[ip].sendto(data, target)
            if i % 1000 == 999:
                _heartbeat_round_trip(target)  # flow control: everything before it has been processed
    finally:
        for s in socks.values():
            s.close()


async def test_fifty_thousand_random_and_mutated_datagrams(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"
    await _provisioned(url, 10)
    serve = Serve(tmp_path, url, sos_extra="  rate_per_s: 1000000\n  burst: 1000000\n")
    templates = {
        stb_ip(i): encode(
            Message(MsgType.SOS, os.urandom(16), 1, int(time.time() * 1000), stb_ip(i)), secret_of(i)
        )
        for i in range(5)
    }
    with serving(serve):
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _fuzz, serve.address, templates, 50_000, 7)
        await asyncio.sleep(1.0)
        assert serve.proc is not None and serve.proc.poll() is None, "serve died"
        assert (await _incidents(url))[0] == 0
        c = await open_stb_client(stb_ip(4), secret_of(4), [serve.address], give_up_s=5)
        try:
            ans = await c.request(MsgType.SOS)
        finally:
            c.close()
        assert not isinstance(ans, RequestTimedOut) and isinstance(ans, ReceiptReceived)
        assert serve.stop() == 0
    assert (await _incidents(url))[0] == 1
    log = serve.log.read_text(encoding="utf-8")
    assert "Traceback" not in log
    counters = ast.literal_eval(re.search(r'stopped counters="(\{.*\})"', log).group(1))  # type: ignore[union-attr]
    # They were really examined (few lost in the kernel), and mutations got as far as the HMAC check.
    assert sum(counters.values()) >= 48_000, counters
    assert counters["bad_mac"] > 1_000 and counters["malformed"] > 10_000, counters
