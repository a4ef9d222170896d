"""The whole voip-sos flow on one machine, run by scripts/demo.sh (after scripts/setup.sh).

Kamailio stands in for the operator's PBX (registrar, digest auth, MESSAGE relayed to the SMS
centre); baresip plays the emergency centre (number 120) and a family member (2001), both
auto-answering and recording what they hear; SIPp is the SMS centre (answers 202). `voip-sos serve`
runs with a demo configuration in a temporary folder, its hub link on the local Mosquitto
(127.0.0.1:1883; a private one when nothing listens there). Mary's home hub runs as `voip-sos hub
run` with a simulated Zigbee2MQTT lock (on the same broker) and a simulated parking system (HTTP).
An STB at 127.0.0.23 presses SOS and instructs the hub at once; the door code and the parking pass
arrive in the follow-up SMS; the centre hears the message twice and presses 1, the son hears it
once and presses 1; the SMS texts, the voice link and the incident's timeline are shown, and the son
revokes the door code from his family page (backend -> broker -> hub -> lock). Every process
started here is stopped by its PID, also on failure or SIGTERM. Every wait is bounded; the whole
run is bounded by DEMO_LIMIT_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hub.broker import mosquitto  # noqa: E402
from tests.hub.hub_sims import ParkingSim, Slot, Z2mLockSim  # noqa: E402
from tests.peers import Baresip, Kamailio, Peer, Sipp, free_port, wait_udp_listening  # noqa: E402

CLI = ROOT / ".venv" / "bin" / "voip-sos"
DEMO_LIMIT_S = 170.0
STB_IP = "127.0.0.23"
STB_SECRET = "00112233445566778899aabbccddeeff"
CENTRE, SON = "120", "2001"
HUB_ID = f"demo-hub-{os.getpid()}"
HUB_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
PASSWORDS = {"voip-sos": "demo-backend-pw", CENTRE: "demo-centre-pw", SON: "demo-son-pw"}
RATE = 8000
LOOP_GAP_S = 1.5
# A loop counts as heard when the recording matches the whole message this well (G.711 keeps ~0.99).
HEARD_CORRELATION = 0.6

BOLD = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
started = time.monotonic()
# Shown on failure: the last lines of each peer's output.
PEERS: list[Peer] = []
PUMPS: set[asyncio.Future[None]] = set()


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


def step(title: str) -> None:
    print(f"\n{BOLD[0]}== {title}{BOLD[1]}  (t+{time.monotonic() - started:.0f} s)", flush=True)


def left(budget_s: float) -> float:
    """A wait's bound: `budget_s`, but never beyond the demo's overall limit."""
    remaining = DEMO_LIMIT_S - (time.monotonic() - started)
    if remaining <= 0:
        raise DemoError(f"the demo ran longer than {DEMO_LIMIT_S:.0f} s")
    return min(budget_s, remaining)


def cli(config: Path, *args: str, check: bool = True, show: bool = True) -> str:
    proc = subprocess.run(
        [str(CLI), "--config", str(config), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=left(60),
        cwd=config.parent,
    )
    out = proc.stdout + proc.stderr
    if show and out.strip():
        print(out.rstrip(), flush=True)
    if check and proc.returncode != 0:
        raise DemoError(f"voip-sos {' '.join(args)} exited with {proc.returncode}:\n{out}")
    return proc.stdout


async def wait_for(what: str, check: object, timeout_s: float, peer: Peer | None = None) -> None:
    deadline = time.monotonic() + left(timeout_s)
    while not check():  # type: ignore[operator]
        if peer is not None and peer.proc is not None and peer.proc.poll() is not None:
            raise DemoError(f"{peer.name} exited while waiting for {what}:\n{peer.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def write_config(work: Path, ports: dict[str, int]) -> Path:
    """The backend's config.yaml for the demo."""
    rtp = ports["rtp"]
    text = f"""\
directory:
  url: sqlite+aiosqlite:///{work / "demo.db"}
sos:
  listen: 127.0.0.1:{ports["sos"]}
sip:
  listen: 127.0.0.1:{ports["sip"]}
  registrar: 127.0.0.1:{ports["kamailio"]}
  domain: 127.0.0.1
  username: voip-sos
  password: {PASSWORDS["voip-sos"]}
  expires_s: 300
rtp:
  ports: {rtp}-{rtp + 99}
emergency:
  center: "{CENTRE}"
  backup: "121"
  test_number: "9999"
  language: en
  redial: 1
  redial_pause_s: 5
  ring_timeout_s: 20
  loop_gap_s: {LOOP_GAP_S}
  max_call_s: 120
  # baresip 1.0.0 (our stand-in centre) answers 500 to an INVITE whose body is multipart/mixed
  # (SDP + PIDF-LO); a real PSAP behind the PBX takes it. Off here, as config.yaml says for such PBXs.
  pidf_lo: false
  # The door code and the parking pass usually arrive moments apart: one follow-up text with both.
  codes_settle_s: 1
hub_link:
  broker: 127.0.0.1:{ports["broker"]}
voice:
  language: en
  cache_dir: {work / "prompts"}
http:
  listen: 127.0.0.1:{ports["http"]}
  public_url: http://127.0.0.1:{ports["http"]}
  link_ttl_s: 3600
log:
  format: text
"""
    path = work / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def write_hub_config(work: Path, ports: dict[str, int], parking: ParkingSim) -> Path:
    """Mary's hub.yaml: the STB at STB_IP, a Zigbee2MQTT lock and the parking system."""
    text = f"""\
hub:
  id: {HUB_ID}
  listen: 127.0.0.1:{ports["hub"]}
  stb_key: {HUB_KEY}
  stb_ip: {STB_IP}
  code_ttl_s: 3600
  deadline_s: 20
  state_file: {work / "hub-state.json"}
link:
  broker: 127.0.0.1:{ports["broker"]}
lock:
  kind: zigbee2mqtt
  broker: 127.0.0.1:{ports["broker"]}
  base_topic: demo-z2m-{os.getpid()}
  device: front_door
  slots: [20, 21, 22]
parking:
  url: {parking.url}
  token: {parking.token}
"""
    path = work / "hub.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def local_broker(stack: contextlib.ExitStack) -> int:
    """The local Mosquitto on 1883, or a private one when nothing listens there."""
    try:
        with socket.create_connection(("127.0.0.1", 1883), 0.5):
            return 1883
    except OSError:
        print("nothing listens on 127.0.0.1:1883: starting a private Mosquitto", flush=True)
        return stack.enter_context(mosquitto())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise DemoError(f"{path.name}: expected 8 kHz mono 16-bit, got {w.getparams()}")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)


def times_heard(heard: np.ndarray, message: np.ndarray) -> tuple[int, list[float], float]:
    """How many whole copies of `message` are in `heard` (FFT cross-correlation, normalised by the
    message's energy), where they start (s) and the best match."""
    if len(heard) < len(message):
        return 0, [], 0.0
    n = 1 << int(np.ceil(np.log2(len(heard) + len(message))))
    corr = np.fft.irfft(np.fft.rfft(heard, n) * np.conj(np.fft.rfft(message, n)), n)
    corr = corr[: len(heard) - len(message) + 1] / float(np.dot(message, message))
    best = float(corr.max())
    starts: list[float] = []
    c = corr.copy()
    for _ in range(20):
        i = int(np.argmax(c))
        if c[i] < HEARD_CORRELATION:
            break
        starts.append(i / RATE)
        c[max(0, i - len(message) // 2) : i + len(message) // 2] = 0
    return len(starts), sorted(starts), best


def recording(folder: Path) -> Path:
    found = sorted(folder.glob("dump-*-dec.wav"))
    if not found:
        raise DemoError(f"baresip recorded nothing in {folder}")
    return found[-1]


def sms_bodies(trace: str) -> list[tuple[str, str]]:
    """(request-URI, body) of every MESSAGE in a SIPp -trace_msg log."""
    out = []
    for chunk in re.split(r"\n-{10,}[^\n]*\n", trace):
        m = re.search(r"^MESSAGE (\S+) SIP/2\.0\r?$", chunk, re.M)
        if "message received" not in chunk or m is None:
            continue
        parts = re.split(r"\r?\n\r?\n", chunk[m.start() :], maxsplit=1)
        length = re.search(r"^(?:Content-Length|l)\s*:\s*(\d+)", parts[0], re.I | re.M)
        body = parts[1] if len(parts) > 1 else ""
        if length:
            body = body.encode()[: int(length.group(1))].decode(errors="replace")
        out.append((m.group(1), body.strip()))
    return out


async def press_and_follow(config: Path, lines: list[str], hub_port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "--config", str(config), "stb", "press", "--source-ip", STB_IP,
        "--secret", STB_SECRET, "--follow", "--follow-limit", "150",
        "--hub", f"127.0.0.1:{hub_port}", "--hub-key", HUB_KEY, "--hub-wait", "30",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    async def pump() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            print(f"    [TV {STB_IP}] {line}", flush=True)

    PUMPS.add(asyncio.ensure_future(pump()))
    return proc


async def demo(work: Path, stack: contextlib.ExitStack) -> None:
    ports = {k: free_port() for k in ("sos", "sip", "kamailio", "centre", "son", "smsc", "http", "hub")}
    ports["rtp"] = 40000 + (os.getpid() % 200) * 100
    ports["broker"] = local_broker(stack)
    config = write_config(work, ports)
    async with contextlib.AsyncExitStack() as sims:
        await demo_with_sims(work, stack, sims, ports, config)


async def demo_with_sims(
    work: Path,
    stack: contextlib.ExitStack,
    sims: contextlib.AsyncExitStack,
    ports: dict[str, int],
    config: Path,
) -> None:
    step("Provision two subscribers")
    cli(config, "directory", "add", "--uid", "U1001", "--name", "Mary O'Brien", "--language", "en",
        "--stb-ip", STB_IP, "--address", "7 Elm Street, Springfield", "--building", "3",
        "--floor", "5", "--room", "502", "--notes", "Type 2 diabetes; insulin in the fridge",
        "--contact", f"Son={SON}", "--stb-secret", STB_SECRET, "--hub-id", HUB_ID)  # fmt: skip
    cli(config, "directory", "add", "--uid", "U1002", "--name", "Wang Fang", "--language", "zh",
        "--stb-ip", "127.0.0.24", "--address", "12 Garden Road, Haidian District, Beijing",
        "--contact", "Daughter=+8613900000002")  # fmt: skip
    cli(config, "directory", "list")

    step("Pre-render Mary's spoken message (Piper) and keep the exact audio a call plays")
    cli(config, "prompts", "text", "--uid", "U1001", "--language", "en")
    cli(config, "prompts", "render", "--uid", "U1001")
    reference = work / "message.wav"
    cli(config, "prompts", "say", "--uid", "U1001", "--language", "en", "--out", str(reference))
    message = read_wav(reference)
    loop_s = len(message) / RATE
    print(f"message: {loop_s:.1f} s, played in a loop with {LOOP_GAP_S} s between")

    step("Start the PBX stand-in (Kamailio), the SMS centre (SIPp), the centre and the son (baresip)")
    smsc = stack.enter_context(Sipp("uas_smsc", ports["smsc"], calls=1000, timeout_s=int(DEMO_LIMIT_S) + 30))
    kamailio = stack.enter_context(Kamailio(ports["kamailio"], PASSWORDS, smsc=("127.0.0.1", ports["smsc"])))
    await wait_udp_listening(ports["smsc"], peer=smsc)
    await wait_udp_listening(ports["kamailio"], peer=kamailio)
    phones: dict[str, Baresip] = {}
    records: dict[str, Path] = {}
    for who, number in (("centre", CENTRE), ("son", SON)):
        records[who] = work / f"heard-{who}"
        records[who].mkdir()
        phones[who] = phone = stack.enter_context(
            Baresip(ports[who], number, registrar=("127.0.0.1", ports["kamailio"]),
                    password=PASSWORDS[number], record_dir=records[who])
        )  # fmt: skip
        PEERS.append(phone)
    for who, phone in phones.items():
        await phone.wait_output("200 OK", left(10))
        print(f"{who}: baresip registered as {'120' if who == 'centre' else SON}@127.0.0.1, auto-answer")
    print(f"Kamailio on 127.0.0.1:{ports['kamailio']} (digest auth), SMS centre on 127.0.0.1:{ports['smsc']}")

    step("Start Mary's home hub (`voip-sos hub run`): a Zigbee2MQTT lock and the parking system, simulated")
    broker = ("127.0.0.1", ports["broker"])
    parking = await sims.enter_async_context(ParkingSim())
    hub_config = write_hub_config(work, ports, parking)
    lock = await sims.enter_async_context(Z2mLockSim(f"demo-z2m-{os.getpid()}", "front_door", broker=broker))
    lock.users.update({1: Slot("112233", permanent=True)})  # Mary's own code, never touched
    hub = stack.enter_context(
        Peer([str(CLI), "hub", "run", "--hub-config", str(hub_config)], cwd=work, name="voip-sos-hub")
    )
    PEERS.append(hub)
    await wait_for("the hub to start", lambda: "hub started" in hub.output(), 20, hub)
    print(f"hub {HUB_ID} on 127.0.0.1:{ports['hub']}, broker 127.0.0.1:{ports['broker']}, lock slots "
          f"{sorted(lock.users)} (slot 1: Mary's own code), parking at {parking.url}")  # fmt: skip

    step("Start `voip-sos serve`")
    serve = stack.enter_context(
        Peer([str(CLI), "--config", str(config), "serve"], cwd=work, name="voip-sos-serve")
    )
    PEERS.append(serve)
    await wait_for("serve to be ready", lambda: "voip-sos ready" in serve.output(), 30, serve)
    for line in serve.output().splitlines():
        if "PBX registration" in line or "voip-sos ready" in line:
            print(f"    [serve] {line}")
    if "state=registered" not in serve.output():
        raise DemoError(f"serve did not register with Kamailio:\n{serve.output()[-3000:]}")

    step(f"Mary presses SOS on her TV ({STB_IP})")
    press_started = time.monotonic()
    tv_lines: list[str] = []
    press = await press_and_follow(config, tv_lines, ports["hub"])
    try:
        await after_press(config, work, press, tv_lines, phones, records, smsc, message, ports, press_started)
        await family_revokes(smsc, lock, hub, ports)
    finally:
        if press.returncode is None:
            _kill(press.pid)
            await asyncio.wait_for(press.wait(), 5)


async def after_press(
    config: Path,
    work: Path,
    press: asyncio.subprocess.Process,
    tv_lines: list[str],
    phones: dict[str, Baresip],
    records: dict[str, Path],
    smsc: Sipp,
    message: np.ndarray,
    ports: dict[str, int],
    press_started: float,
) -> None:
    loop_s = len(message) / RATE
    await wait_for("the RECEIPT", lambda: any("RECEIPT" in ln for ln in tv_lines), 10)
    receipt = next(ln for ln in tv_lines if "RECEIPT" in ln)
    m = re.search(r"incident (\d+)", receipt)
    if m is None:
        raise DemoError(f"no incident in the RECEIPT: {receipt}")
    incident = m.group(1)

    step("The phones ring and answer")
    answered: dict[str, float] = {}
    for who in ("centre", "son"):
        await wait_for(
            f"the {who} to answer", lambda w=who: "Call established" in phones[w].output(), 30, phones[who]
        )
        answered[who] = time.monotonic()
        print(f"{who} answered {answered[who] - press_started:.1f} s after the press")

    step("SMS received at the SMS centre (through Kamailio): the alarm, then the door code and parking pass")
    await wait_for("two MESSAGEs at the SMS centre", lambda: len(sms_bodies(smsc.messages())) >= 2, 30, smsc)
    await wait_for(
        "the follow-up SMS with the door code and parking pass",
        lambda: sum("Door code" in b for _, b in sms_bodies(smsc.messages())) >= 2,
        30,
        smsc,
    )
    texts = sms_bodies(smsc.messages())
    for uri, body in texts:
        print(f"--- to {uri} ({len(body)} characters)\n{body}")
    links = sorted({u for _, b in texts for u in re.findall(r"https?://\S+/v/[A-Za-z0-9_\-]+", b)})
    if not links:
        raise DemoError("no voice link in the SMS texts")
    follow_ups = [b for _, b in texts if "Door code" in b]
    if len(follow_ups) != 2 or not all("Parking code" in b for b in follow_ups):
        raise DemoError(f"expected one follow-up with both codes per recipient, got {follow_ups}")

    step("Fetch the voice link from the SMS")
    status, ctype, body = await http_get(links[0])
    print(f"GET {links[0]}\n-> {status}, {ctype}, {len(body)} bytes, starts {body[:4]!r}…{body[8:12]!r}")
    fetched = work / "link.wav"
    fetched.write_bytes(body)
    same = np.array_equal(read_wav(fetched), message)
    print(f"the same audio the call plays: {'yes' if same else 'NO'}")
    if not same or not body.startswith(b"RIFF"):
        raise DemoError("the voice link did not return the message's WAV")

    step("The son listens once and presses 1; the centre listens to two loops and presses 1")
    presses = {"son": loop_s + 1.0, "centre": 2 * loop_s + LOOP_GAP_S + 1.0}
    for who in sorted(presses, key=presses.__getitem__):
        wait_s = answered[who] + presses[who] - time.monotonic()
        if wait_s > 0:
            print(f"{who}: listening for {wait_s:.0f} s …", flush=True)
            await asyncio.sleep(left(wait_s))
        await phones[who].command("sndcode", "1")
        print(f"{who}: pressed 1 (RFC 4733 through baresip's ctrl_tcp)")

    step("Waiting for the incident to close (the TV is told each step)")
    try:
        await asyncio.wait_for(press.wait(), left(40))
    except TimeoutError:
        raise DemoError("the incident did not close within 40 s of the last key press") from None

    step("What the call takers heard (cross-correlation of baresip's recording with the message)")
    await asyncio.sleep(0.5)
    for who in ("centre", "son"):
        rec = recording(records[who])
        n, starts, best = times_heard(read_wav(rec), message)
        where = ", ".join(f"{s:.1f}" for s in starts)
        times = f"{n} time{'s' if n != 1 else ''}"
        print(f"{who}: heard the whole message {times} (at {where} s; best match {best:.2f})")
        need = 2 if who == "centre" else 1
        if n < need:
            raise DemoError(f"the {who} heard the message {n} times, expected at least {need}")

    step(f"voip-sos incidents show {incident}")
    cli(config, "incidents", "show", incident)

    step("Operator metrics (calls and SMS)")
    _, _, metrics = await http_get(f"http://127.0.0.1:{ports['http']}/metrics")
    for line in metrics.decode().splitlines():
        if re.match(r"voip_sos_(calls|sms|incidents)_\w*total\{", line) and not line.endswith(" 0.0"):
            print(line)


async def family_revokes(smsc: Sipp, lock: Z2mLockSim, hub: Peer, ports: dict[str, int]) -> None:
    step("The son opens his family page from his SMS and revokes the door code")
    son_texts = [b for uri, b in sms_bodies(smsc.messages()) if SON in uri]
    found = [m for b in son_texts for m in re.findall(r"http://\S+/f/[A-Za-z0-9_\-]{22}", b)]
    if not found:
        raise DemoError(f"no family link in the son's SMS: {son_texts}")
    url = found[0]
    status, ctype, _ = await http_get(url)
    print(f"GET {url}\n-> {status}, {ctype} (the page; a phone shows it, see docs/family.md)")
    _, _, body = await http_get(url + "/state")
    state = json.loads(body)
    print(f"state: {state['status']}, door code {state['codes']['door_code']}, "
          f"parking pass {state['codes']['parking_code']}")  # fmt: skip
    print(f"lock slots before: {dict(sorted((u, s.code) for u, s in lock.users.items()))}")
    answer = await http_post(url + "/revoke", {"X-Family-Nonce": state["nonce"]})
    print(f"POST {url}/revoke -> {answer}")
    print(f"lock slots after:  {dict(sorted((u, s.code) for u, s in lock.users.items()))}")
    result = answer.get("revoke", {})
    if result.get("state") != "done" or lock.temporary() != {} or 1 not in lock.users:
        raise DemoError(f"the revoke did not clear exactly the temporary code: {answer}")
    for line in hub.output().splitlines():
        if any(k in line for k in ("door code confirmed", "parking pass granted", "revoked temporary codes")):
            print(f"    [hub] {line}")


async def http_post(url: str, headers: dict[str, str]) -> dict[str, object]:
    def post() -> dict[str, object]:
        req = urllib.request.Request(url, data=b"", headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return dict(json.loads(resp.read()))

    return await asyncio.wait_for(asyncio.to_thread(post), left(35))


async def http_get(url: str) -> tuple[int, str | None, bytes]:
    def get() -> tuple[int, str | None, bytes]:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()

    return await asyncio.wait_for(asyncio.to_thread(get), left(15))


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="voip-sos-demo-"))
    code = 0
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        try:
            asyncio.run(demo(work, stack))
        except DemoError as exc:
            print(f"\ndemo FAILED: {exc}", file=sys.stderr)
            for peer in PEERS:
                tail = "\n".join(peer.output().splitlines()[-25:])
                print(f"--- last lines of {peer.name}:\n{tail}", file=sys.stderr)
            code = 1
        except KeyboardInterrupt:
            print("\ndemo interrupted", file=sys.stderr)
            code = 130
        finally:
            step("Stopping everything the demo started")
    print(f"demo {'finished' if code == 0 else 'failed'} in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
