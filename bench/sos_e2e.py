"""End-to-end SOS benchmark (issue 7): 100 subscribers press within one second.

`voip-sos serve` runs as a real process. Each subscriber has two contacts, so every press becomes
3 calls (centre + 2 contacts) and 3 SMS: 300 calls in parallel. Calls go to a SIPp UAS that answers
every call at once and hangs up after 10 s (tests/sipp/uas_answer_hangup_10s.xml); MESSAGEs go to a
SIPp SMS centre answering 202 (tests/sipp/uas_smsc.xml). Both sit behind `sip.proxy`: a small UDP
relay in this process sends MESSAGE to the SMS centre and every other request to the UAS (what the
PBX does), and the answers back. Redial is off, so each press is exactly 3 calls and 3 SMS.

Every timestamp comes from one tshark capture on the loopback interface (kernel time, one clock):
- press -> INVITE: the STB's first SOS datagram on the wire -> each of its incident's INVITEs leaving
  the backend's SIP port (300 samples);
- answer -> RTP: the 200 OK reaching the backend's SIP port -> the first RTP packet of that call
  leaving the backend (its port from the SDP offer).
Messages are pre-rendered before the run (`prompts render --all`, the cache is kept in
var/bench-prompts), as `serve` does for a provisioned directory.

    python -m bench.sos_e2e [--presses 100] [--spread-s 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.peers import Peer, Sipp, free_port, require_tool, wait_udp_listening
from tests.sos.sos_support import secret_of, stb_ip
from voip_sos.directory import Address, Contact, Directory, Stb, Subscriber
from voip_sos.sos.wire import MsgType
from voip_sos.stb.aio import open_stb_client
from voip_sos.stb.events import ReceiptReceived

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "voip-sos"
# BENCH_KEEP=1 keeps the work folder (capture, serve.log, database).
# BENCH_PROFILE=FILE runs serve under cProfile (stats written to FILE when it stops).
SERVE_CMD = (
    [sys.executable, "-m", "cProfile", "-o", os.environ["BENCH_PROFILE"], "-m", "voip_sos"]
    if os.environ.get("BENCH_PROFILE")
    else [str(CLI)]
)
PROMPT_CACHE = ROOT / "var" / "bench-prompts"
CALL_HOLD_S = 10.0
CALLS_PER_PRESS = 3
READY_TIMEOUT_S = 60.0
RENDER_TIMEOUT_S = 900.0


class SipRelay(asyncio.DatagramProtocol):
    """The PBX's routing, stateless: MESSAGE to the SMS centre, other requests to the UAS; every
    datagram from either goes back to the backend."""

    def __init__(self, backend: tuple[str, int], uas: tuple[str, int], smsc: tuple[str, int]) -> None:
        self.backend, self.uas, self.smsc = backend, uas, smsc
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.backend:
            self.transport.sendto(data, self.smsc if data.startswith(b"MESSAGE ") else self.uas)
        else:
            self.transport.sendto(data, self.backend)


@dataclass
class Press:
    uid: str
    ip: str
    sent_at: float = 0.0  # wall clock, this process
    incident: int | None = None
    wire_at: float | None = None  # first SOS datagram on the wire


@dataclass
class SipCall:
    call_id: str
    uid: str
    invite_at: float
    rtp_port: int | None
    answered_at: float | None = None
    rtp_at: float | None = None


@dataclass
class Capture:
    calls: dict[str, SipCall] = field(default_factory=dict)
    sms: dict[str, str] = field(default_factory=dict)  # Call-ID -> uid
    sms_ok: set[str] = field(default_factory=set)
    sos_first: dict[str, float] = field(default_factory=dict)  # STB ip -> time


def pcap_udp(path: Path) -> Any:
    """(time, src ip, src port, dst port, payload) for every UDP/IPv4 packet of a pcap file."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    endian, nano = {0xA1B2C3D4: ("<", False), 0xA1B23C4D: ("<", True)}.get(magic, (">", False))
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    l2 = {1: 14, 113: 16, 276: 20}.get(linktype)
    if l2 is None:
        raise RuntimeError(f"pcap link type {linktype} not handled")
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[off : off + 16])
        pkt = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        ip = pkt[l2:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
        src = ".".join(str(b) for b in ip[12:16])
        yield sec + frac / (1e9 if nano else 1e6), src, sport, dport, ip[ihl + 8 :]


def _header(msg: str, name: str) -> str | None:
    m = re.search(rf"^{name}\s*:\s*(.*?)\r?$", msg, re.I | re.M)
    return m.group(1) if m else None


def analyse(pcap: Path, sip_port: int, sos_port: int, rtp: tuple[int, int]) -> Capture:
    cap = Capture()
    first_rtp: dict[int, list[float]] = {}
    for t, src, sport, dport, payload in pcap_udp(pcap):
        if dport == sos_port:
            cap.sos_first.setdefault(src, t)
        elif rtp[0] <= sport <= rtp[1] and payload[:1] == b"\x80" and payload[1] & 0x80:
            first_rtp.setdefault(sport, []).append(t)
        elif sport == sip_port or dport == sip_port:
            msg = payload.decode("utf-8", errors="replace")
            call_id = _header(msg, "Call-ID") or _header(msg, "i") or ""
            cseq = _header(msg, "CSeq") or ""
            if sport == sip_port and msg.startswith("INVITE ") and call_id not in cap.calls:
                sender = re.search(r"One-key SOS (\S+?)\"", _header(msg, "From") or "")
                media = re.search(r"^m=audio (\d+)", msg, re.M)
                cap.calls[call_id] = SipCall(
                    call_id, sender.group(1) if sender else "?", t, int(media.group(1)) if media else None
                )
            elif sport == sip_port and msg.startswith("MESSAGE "):
                uid = re.search(r"\(subscriber (\S+?)\)", msg)
                cap.sms.setdefault(call_id, uid.group(1) if uid else "?")
            elif dport == sip_port and msg.startswith("SIP/2.0 2"):
                if cseq.endswith("INVITE") and call_id in cap.calls:
                    call = cap.calls[call_id]
                    call.answered_at = call.answered_at or t
                elif cseq.endswith("MESSAGE"):
                    cap.sms_ok.add(call_id)
    for call in cap.calls.values():
        if call.answered_at is not None and call.rtp_port in first_rtp:
            after = [x for x in first_rtp[call.rtp_port] if x >= call.answered_at]
            call.rtp_at = after[0] if after else None
    return cap


async def provision(url: str, n: int) -> list[Press]:
    directory = await Directory.open(url)
    presses = []
    try:
        for i in range(n):
            uid, ip = f"b{i:04d}", stb_ip(i)
            await directory.add(
                Subscriber(
                    uid=uid,
                    name=f"Bench Subscriber {i}",
                    language="en",
                    address=Address(line=f"{i} Bench Street, Springfield"),
                    contacts=(Contact("Son", f"2{i:04d}1"), Contact("Daughter", f"2{i:04d}2")),
                    stbs=(Stb(ip=ip, secret=secret_of(i)),),
                )
            )
            presses.append(Press(uid, ip))
    finally:
        await directory.close()
    return presses


def write_config(work: Path, ports: dict[str, int]) -> Path:
    rtp = ports["rtp"]
    path = work / "bench.yaml"
    path.write_text(
        f"""\
directory:
  url: sqlite+aiosqlite:///{work / "bench.db"}
sos:
  listen: 127.0.0.1:{ports["sos"]}
  max_pending: 4096
sip:
  listen: 127.0.0.1:{ports["sip"]}
  registrar:
  proxy: 127.0.0.1:{ports["relay"]}
  domain: 127.0.0.1
  username: voip-sos
rtp:
  ports: {rtp}-{rtp + ports["rtp_span"] - 1}
emergency:
  center: "120"
  backup:
  redial: 0
  ring_timeout_s: 20
  max_call_s: 60
voice:
  cache_dir: {PROMPT_CACHE}
http:
  listen: 127.0.0.1:{ports["http"]}
  public_url: http://127.0.0.1:{ports["http"]}
log:
  level: warning
""",
        encoding="utf-8",
    )
    return path


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(values), q)), 3) if values else float("nan")


async def press_all(presses: list[Press], sos: tuple[str, int], spread_s: float) -> None:
    start = time.time() + 0.2

    async def one(i: int, p: Press) -> None:
        client = await open_stb_client(p.ip, secret_of(i), [sos], bind=(p.ip, 0))
        try:
            await asyncio.sleep(max(0.0, start + i * spread_s / len(presses) - time.time()))
            p.sent_at = time.time()
            answer = await client.request(MsgType.SOS)
            if isinstance(answer, ReceiptReceived):
                p.incident = answer.incident_id
        finally:
            client.close()

    await asyncio.gather(*(one(i, p) for i, p in enumerate(presses)))


async def run(n: int, spread_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    work = Path(tempfile.mkdtemp(prefix="bench-sos-e2e-"))
    ports = {k: free_port() for k in ("sos", "sip", "relay", "uas", "smsc", "http")}
    ports["rtp_span"] = max(200, n * CALLS_PER_PRESS * 4)
    ports["rtp"] = 20000 + (os.getpid() % 8) * 5000
    config = write_config(work, ports)
    presses = await provision(f"sqlite+aiosqlite:///{work / 'bench.db'}", n)
    PROMPT_CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    render = await asyncio.create_subprocess_exec(
        str(CLI), "--config", str(config), "prompts", "render", "--all", "--jobs", "2",
        stdin=subprocess.DEVNULL, cwd=work,
    )  # fmt: skip
    if await asyncio.wait_for(render.wait(), RENDER_TIMEOUT_S) != 0:
        raise RuntimeError("prompts render failed")
    print(f"messages pre-rendered in {time.monotonic() - t0:.1f} s", file=sys.stderr)

    # Where the UAS's SDP sends our RTP: a bound socket nobody reads (the kernel drops what does not
    # fit, and no ICMP goes back), so 15,000 packets a second cost this process nothing.
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink_port = sink.getsockname()[1]
    relay = SipRelay(("127.0.0.1", ports["sip"]), ("127.0.0.1", ports["uas"]), ("127.0.0.1", ports["smsc"]))
    relay_tr, _ = await loop.create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", ports["relay"]))
    pcap = work / "bench.pcap"
    rtp_lo, rtp_hi = ports["rtp"], ports["rtp"] + ports["rtp_span"] - 1
    # RTP: only packets with the marker bit (RFC 3550 §5.1: the first of a stream), so the capture
    # stays light while 300 calls send 15,000 packets a second.
    bpf = (
        f"udp and (port {ports['sip']} or dst port {ports['sos']} "
        f"or (src portrange {rtp_lo}-{rtp_hi} and udp[9] & 0x80 != 0))"
    )
    calls = n * CALLS_PER_PRESS
    try:
        with contextlib.ExitStack() as stack:
            tshark = stack.enter_context(
                Peer(
                    [require_tool("tshark"), "-i", "lo", "-B", "64", "-F", "pcap", "-w", str(pcap), "-f", bpf]
                )
            )
            uas = stack.enter_context(
                Sipp("uas_answer_hangup_10s", ports["uas"], calls=calls, keys={"sink_port": str(sink_port)},
                     timeout_s=300)
            )  # fmt: skip
            smsc = stack.enter_context(Sipp("uas_smsc", ports["smsc"], calls=100000, timeout_s=300))
            await wait_udp_listening(ports["uas"], peer=uas)
            await wait_udp_listening(ports["smsc"], peer=smsc)
            serve = stack.enter_context(
                Peer([*SERVE_CMD, "--config", str(config), "serve"], cwd=work, name="serve")
            )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while "Capturing on" not in tshark.output() or not pcap.exists():
                if time.monotonic() > deadline or tshark.proc is None or tshark.proc.poll() is not None:
                    raise RuntimeError(f"tshark did not start:\n{tshark.output()}")
                await asyncio.sleep(0.05)
            # The SOS socket is bound last, once everything that acts on a press is ready.
            await wait_udp_listening(ports["sos"], timeout_s=READY_TIMEOUT_S, peer=serve)
            await asyncio.sleep(0.5)

            await press_all(presses, ("127.0.0.1", ports["sos"]), spread_s)
            # Every call is answered at once and hung up by the UAS after CALL_HOLD_S; SIPp exits
            # after `calls` calls. Bounded: a call never placed shows up as SIPp's timeout.
            try:
                await uas.wait_async(CALL_HOLD_S + 50)
            except TimeoutError as exc:
                print(f"UAS did not finish: {str(exc)[:500]}", file=sys.stderr)
            await asyncio.sleep(1.0)  # the last MESSAGE answers and BYE replies on the wire
            assert serve.proc is not None
            serve.proc.send_signal(signal.SIGTERM)  # a clean stop (and the profile written)
            with contextlib.suppress(subprocess.TimeoutExpired):
                serve.wait(30)
            (work / "serve.log").write_text(serve.output())
            with contextlib.suppress(ProcessLookupError):
                assert tshark.proc is not None
                os.kill(tshark.proc.pid, signal.SIGINT)
            tshark.wait(10)
    finally:
        relay_tr.close()
        sink.close()
    cap = analyse(pcap, ports["sip"], ports["sos"], (rtp_lo, rtp_hi))
    if os.environ.get("BENCH_KEEP"):
        print(f"capture and serve log kept in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return summarise(presses, cap, n)


def summarise(presses: list[Press], cap: Capture, n: int) -> dict[str, Any]:
    by_uid: dict[str, list[SipCall]] = {}
    for call in cap.calls.values():
        by_uid.setdefault(call.uid, []).append(call)
    sms_by_uid: dict[str, int] = {}
    for call_id, uid in cap.sms.items():
        if call_id in cap.sms_ok:
            sms_by_uid[uid] = sms_by_uid.get(uid, 0) + 1
    to_invite: list[float] = []
    to_rtp: list[float] = []
    lost = 0
    for p in presses:
        p.wire_at = cap.sos_first.get(p.ip)
        calls = by_uid.get(p.uid, [])
        answered = [c for c in calls if c.answered_at is not None]
        if (
            p.incident is None
            or len(calls) < CALLS_PER_PRESS
            or len(answered) < CALLS_PER_PRESS
            or sms_by_uid.get(p.uid, 0) < CALLS_PER_PRESS
        ):
            lost += 1
        for c in calls:
            if p.wire_at is not None:
                to_invite.append((c.invite_at - p.wire_at) * 1000)
            if c.answered_at is not None and c.rtp_at is not None:
                to_rtp.append((c.rtp_at - c.answered_at) * 1000)
    answered_total = sum(1 for c in cap.calls.values() if c.answered_at is not None)
    no_rtp = sum(1 for c in cap.calls.values() if c.answered_at is not None and c.rtp_at is None)
    presses_on_wire = [p.wire_at for p in presses if p.wire_at is not None]
    spread = (max(presses_on_wire) - min(presses_on_wire)) * 1000 if presses_on_wire else float("nan")
    receipts = sum(p.incident is not None for p in presses)
    rows = [
        ("presses", n, f"sent within {spread:.0f} ms; {receipts} RECEIPTs"),
        ("calls placed", len(cap.calls), f"expected {n * CALLS_PER_PRESS} (centre + 2 contacts each)"),
        ("calls answered", answered_total, f"{no_rtp} answered without RTP from us"),
        ("SMS sent (2xx)", len(cap.sms_ok), f"{len(cap.sms)} MESSAGEs on the wire"),
        ("lost presses", lost, "no RECEIPT, or fewer than 3 calls answered / 3 SMS accepted"),
        ("press -> INVITE p50", f"{pct(to_invite, 50):.1f} ms", f"{len(to_invite)} INVITEs"),
        ("press -> INVITE p99", f"{pct(to_invite, 99):.1f} ms", f"max {pct(to_invite, 100):.1f} ms"),
        ("answer -> RTP p50", f"{pct(to_rtp, 50):.1f} ms", f"{len(to_rtp)} calls"),
        ("answer -> RTP p99", f"{pct(to_rtp, 99):.1f} ms", f"max {pct(to_rtp, 100):.1f} ms"),
    ]
    print(f"\nSOS end to end: {n} presses, {CALLS_PER_PRESS} calls and SMS each (times from the wire)")
    for name, value, note in rows:
        print(f"  {name:<22} {value!s:>10}   {note}")
    return {
        "presses": n,
        "calls_placed": len(cap.calls),
        "calls_answered": answered_total,
        "sms_sent": len(cap.sms_ok),
        "lost": lost,
        "press_to_invite_ms_p50": pct(to_invite, 50),
        "press_to_invite_ms_p99": pct(to_invite, 99),
        "answer_to_rtp_ms_p99": pct(to_rtp, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--spread-s", type=float, default=1.0, help="presses spread over this long")
    args = parser.parse_args()
    result = asyncio.run(run(args.presses, args.spread_s))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
