"""End-to-end harness for incidents: the real `voip-sos serve` process with its own config, subscribers
provisioned in its SQLite directory, the real STB CLI, and audio checks on what callees recorded.

Peers (Kamailio, baresip, SIPp) come from tests/peers.py; this module only adds what the incident
tests need on top: `Backend` (one serve process, restartable, `kill -9`-able), `press()` (the STB CLI
with `--follow`), `repetitions()` (how often a message occurs in a recording, by normalised
cross-correlation), and small polling helpers bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import CLI
from tests.peers import Addr, Sipp, free_port
from voip_sos.directory import Address, Contact, Directory, Stb, Subscriber
from voip_sos.directory.schema import upgrade

READY_TIMEOUT_S = 40.0
SIP_PASSWORD = "pw-voip-sos"
PHONE_PASSWORD = "pw-phone"

# A short operator template (voice.templates_dir): one loop lasts a few seconds.
SHORT_TEMPLATE = (
    'opening: "Automated emergency call."\n'
    'body: "{name} at {address}."\n'
    'closing: "Press 1 to confirm, 9 to repeat."\n'
    'confirmed: "Confirmed. Goodbye."\n'
)


async def wait_for(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.1
) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(every_s)


def baresip_port() -> int:
    """A SIP port for baresip: it also binds TLS on the port above (seen failing with EADDRINUSE)."""
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise OSError("no free port pair for baresip")


def secret_hex(n: int) -> str:
    return bytes([n & 0xFF, 0x5A]).hex() * 16


class Backend:
    """One `voip-sos serve` with its own config file, database and log; start, kill -9, restart."""

    def __init__(
        self,
        workdir: Path,
        pbx: Addr,
        emergency: dict[str, Any],
        *,
        proxy: Addr | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.url = f"sqlite+aiosqlite:///{workdir / 'directory.db'}"
        self.sos_port = free_port(both=False)
        self.sip_port = free_port()
        self.http_port = free_port()
        # A private range of 40 ports (20 calls at once), picked from the SOS port so that
        # backends running side by side do not share one.
        rtp = 40000 + (self.sos_port % 500) * 40
        templates = workdir / "templates"
        templates.mkdir(exist_ok=True)
        (templates / "en.yaml").write_text(SHORT_TEMPLATE, encoding="utf-8")
        px = proxy or pbx
        em = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in emergency.items())
        self.config = workdir / "serve.yaml"
        self.config.write_text(
            f"directory:\n  url: {self.url}\n"
            f"sos:\n  listen: 127.0.0.1:{self.sos_port}\n"
            f"sip:\n  listen: 127.0.0.1:{self.sip_port}\n  registrar: {pbx[0]}:{pbx[1]}\n"
            f"  proxy: {px[0]}:{px[1]}\n  domain: 127.0.0.1\n  username: voip-sos\n"
            f"  password: {SIP_PASSWORD}\n  expires_s: 300\n"
            f"rtp:\n  ports: {rtp}-{rtp + 39}\n"
            f"http:\n  listen: 127.0.0.1:{self.http_port}\n  public_url: http://127.0.0.1:{self.http_port}\n"
            f"emergency:\n{em}"
            f"voice:\n  cache_dir: {workdir / 'prompts'}\n  templates_dir: {templates}\n  length_scale: 1.0\n"
            f"log:\n  level: info\n",
            encoding="utf-8",
        )
        self.log = workdir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def sos(self) -> str:
        return f"127.0.0.1:{self.sos_port}"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    async def provision(self, subs: list[Subscriber]) -> None:
        await upgrade(self.url)
        d = await Directory.open(self.url, migrate=False)
        try:
            for s in subs:
                await d.add(s)
        finally:
            await d.close()

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOIP_SOS_")}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(CLI), "--config", str(self.config), "serve"],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    async def start(self) -> None:
        """Start serve (again) and wait until it says it is ready."""
        mark = len(self.log_text())
        self._spawn()
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if "voip-sos ready" in self.log_text()[mark:]:
                return
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"serve did not start:\n{self.log_text()[-4000:]}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    async def cli(self, *args: str, timeout_s: float = 60.0) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            str(CLI), "--config", str(self.config), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=self.workdir,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        assert proc.returncode is not None
        return proc.returncode, out.decode() + err.decode()

    async def show(self, incident_id: int) -> dict[str, Any]:
        rc, out = await self.cli("incidents", "show", str(incident_id), "--json")
        assert rc == 0, out
        return dict(json.loads(out.splitlines()[0]))

    async def events(self, incident_id: int, kind: str | None = None) -> list[dict[str, Any]]:
        evs = (await self.show(incident_id))["events"]
        return [e for e in evs if kind is None or e["kind"] == kind]

    async def closed(self, incident_id: int) -> dict[str, Any] | None:
        inc = await self.show(incident_id)
        return inc if inc["closed_at"] else None

    async def prompt_wav(self, uid: str, language: str = "en") -> Path:
        out = self.workdir / f"prompt-{uid}-{language}.wav"
        if not out.exists():
            rc, text = await self.cli(
                "prompts", "say", "--uid", uid, "--language", language, "--out", str(out)
            )
            assert rc == 0, text
        return out

    def http_get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        status, _, body = self.http_get("/metrics")
        assert status == 200
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in body.decode().splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0


def subscriber(uid: str, name: str, address: str, stb_n: int, contacts: list[tuple[str, str]]) -> Subscriber:
    return Subscriber(
        uid=uid,
        name=name,
        language="en",
        address=Address(line=address, city="Springfield", street="Elm Street", number="12"),
        contacts=tuple(Contact(n, p) for n, p in contacts),
        stbs=(Stb(ip=stb_ip(stb_n), secret=bytes.fromhex(secret_hex(stb_n))),),
    )


def stb_ip(n: int) -> str:
    """The STB's loopback address (127.0.0.23 upwards; 127.0.0.1 stays the backend's)."""
    return f"127.0.0.{23 + n}"


class Press:
    """`voip-sos stb press … --follow --json` running in the background until the incident closes."""

    def __init__(self, backend: Backend, n: int, *extra: str) -> None:
        self.backend, self.n, self.extra = backend, n, extra
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Press:
        self.proc = await asyncio.create_subprocess_exec(
            str(CLI), "stb", "press", "--backend", self.backend.sos, "--source-ip", stb_ip(self.n),
            "--secret", secret_hex(self.n), "--follow", "--follow-limit", "600", "--json", *self.extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return self

    async def result(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout_s)
        assert self.proc.returncode == 0, out.decode() + err.decode()
        return dict(json.loads(out.decode().splitlines()[0]))

    def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


async def stb(backend: Backend, n: int, command: str, *extra: str) -> dict[str, Any]:
    """One STB request (no follow): `cancel`, `update`, or a `press` answered by its RECEIPT."""
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "stb", command, "--backend", backend.sos, "--source-ip", stb_ip(n),
        "--secret", secret_hex(n), "--json", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode() + err.decode()
    return dict(json.loads(out.decode().splitlines()[0]))


async def incident_of(backend: Backend, uid: str) -> int:
    async def find() -> int | None:
        rc, out = await backend.cli("incidents", "list", "--json")
        for inc in json.loads(out)["incidents"] if rc == 0 else []:
            if inc["uid"] == uid:
                return int(inc["id"])
        return None

    return int(await wait_for(find, 15, f"an incident for {uid}"))


# -- audio --------------------------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        data = w.readframes(w.getnframes())
    assert width == 2, f"{path}: {width * 8}-bit"
    pcm = np.frombuffer(data, dtype="<i2").astype(np.float64)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1)
    return pcm, rate


def _resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    if rate == to:
        return x
    n = int(len(x) * to / rate)
    return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x)


def correlation(recording: Path, template: Path) -> tuple[np.ndarray, int]:
    """Normalised cross-correlation (-1..1) of `template` at every offset of `recording`, at 8 kHz."""
    rec, r1 = read_wav(recording)
    tpl, r2 = read_wav(template)
    rec, tpl = _resample(rec, r1, 8000), _resample(tpl, r2, 8000)
    if len(rec) < len(tpl):
        return np.zeros(0), 8000
    n = len(rec) + len(tpl)
    size = 1 << (n - 1).bit_length()
    raw = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(tpl, size)), size)[
        : len(rec) - len(tpl) + 1
    ]
    energy = np.concatenate(([0.0], np.cumsum(rec * rec)))
    window = energy[len(tpl) :] - energy[: len(rec) - len(tpl) + 1]
    norm = np.sqrt(np.maximum(window, 1e-9) * float(np.dot(tpl, tpl)))
    return raw / norm, 8000


def repetitions(recording: Path, template: Path, threshold: float = 0.6) -> list[float]:
    """Start times (s) of each occurrence of `template` in `recording`."""
    corr, rate = correlation(recording, template)
    tlen = len(read_wav(template)[0]) * 8000 // read_wav(template)[1]
    found: list[float] = []
    i = 0
    while i < len(corr):
        if corr[i] >= threshold:
            j = min(len(corr), i + tlen // 2)
            best = i + int(np.argmax(corr[i:j]))
            found.append(best / rate)
            i = best + tlen // 2
        else:
            i += 1
    return found


def recordings(record_dir: Path) -> list[Path]:
    """What a baresip callee heard, one file per call, oldest first."""
    return sorted(record_dir.glob("dump-*-dec.wav"))


def register_sipp(kamailio_port: int, user: str, contact_port: int) -> None:
    """Make a scripted SIPp UAS on `contact_port` reachable as `user` through Kamailio."""
    port = free_port(both=False)
    with Sipp(
        "uac_register_contact",
        port,
        ("127.0.0.1", kamailio_port),
        keys={"user": user, "contact_port": str(contact_port)},
        extra=["-au", user, "-ap", PHONE_PASSWORD],
        timeout_s=10,
    ) as sipp:
        rc = sipp.wait(15)
        assert rc == 0, sipp.output()[-2000:] + sipp.messages()[-2000:]
