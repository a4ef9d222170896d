"""`voip-sos sip register --check`, `voip-sos call test`, `voip-sos sms test`: the SIP user agent
from the command line, printing each SIP step with a millisecond timestamp."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import numpy as np

from voip_sos.config import Config
from voip_sos.errors import MediaError, VoipSosError

__all__ = ["register"]

Addr = tuple[str, int]


def register(sub: Any) -> None:
    p = sub.add_parser("sip", help="SIP registration with the PBX")
    ssub = p.add_subparsers(dest="sip_command", metavar="ACTION")
    ssub.required = True
    reg = ssub.add_parser("register", help="register with the configured PBX")
    reg.add_argument("--check", action="store_true", help="register, print the outcome, unregister")
    reg.set_defaults(handler=_register)

    c = sub.add_parser("call", help="test calls")
    csub = c.add_subparsers(dest="call_command", metavar="ACTION")
    csub.required = True
    t = csub.add_parser("test", help="call a number and play a prompt")
    t.add_argument("--to", required=True, metavar="NUMBER")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--prompt", metavar="FILE.wav", help="8 kHz mono 16-bit WAV (default: a tone)")
    src.add_argument("--text", help="text to speak with the voice renderer (voice.language)")
    t.add_argument("--seconds", type=float, default=30.0, help="hang up after this long (default 30)")
    t.add_argument("--no-loop", action="store_true", help="play the prompt once")
    t.set_defaults(handler=_call_test)

    s = sub.add_parser("sms", help="test messages (SIP MESSAGE)")
    msub = s.add_subparsers(dest="sms_command", metavar="ACTION")
    msub.required = True
    m = msub.add_parser("test", help="send one MESSAGE and print the final status")
    m.add_argument("--to", required=True, metavar="NUMBER")
    m.add_argument("--text", required=True)
    m.set_defaults(handler=_sms_test)


class _Trace:
    """Prints one line per SIP message: time since start in ms, direction, start line."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def line(self, text: str) -> None:
        print(f"{(time.monotonic() - self.start) * 1000:10.1f} ms  {text}", flush=True)

    def __call__(self, direction: str, data: bytes, addr: Addr, transport: str) -> None:
        first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        arrow = "->" if direction == "out" else "<-"
        self.line(f"{arrow} {addr[0]}:{addr[1]}/{transport.lower()}  {first}")


async def _started(cfg: Config, trace: _Trace) -> Any:
    from voip_sos.aio.user_agent import UserAgent

    ua = UserAgent(cfg)
    await ua.start()
    assert ua.transport is not None
    ua.transport.trace = trace
    return ua


def _register(args: argparse.Namespace, cfg: Config) -> int:
    if cfg.sip.registrar is None:
        print("sip.registrar is not set: nothing to register with", file=sys.stderr)
        return 2

    async def run() -> int:
        trace = _Trace()
        ua = await _started(cfg, trace)
        try:
            result = await asyncio.wait_for(ua.register(), 40)
            trace.line(
                f"registration {result.state}: {result.status} {result.reason}"
                + (f", expires {result.expires_s} s" if result.expires_s else "")
            )
            return 0 if result.ok else 1
        except TimeoutError:
            trace.line("registration: no final answer")
            return 1
        finally:
            await ua.close(unregister=True)

    return asyncio.run(run())


def _tone() -> Any:
    from voip_sos.rtp import Prompt

    t = np.arange(8000) / 8000.0
    beep = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    return Prompt.from_pcm(beep, name="tone")


def _render_text(cfg: Config, text: str) -> Any:
    """Speak `text` with the voice renderer (Piper, or espeak-ng for a fallback voice) at 8 kHz.
    Rendered before the event loop starts, so blocking here stalls nothing."""
    from voip_sos.voice.engines import SynthesisSettings
    from voip_sos.voice.models import resolve_voice
    from voip_sos.voice.render import engine_for, render_pcm

    spec = resolve_voice(cfg.voice.language, cfg.voice.models)
    return render_pcm(engine_for(spec, SynthesisSettings()), text)


def _call_test(args: argparse.Namespace, cfg: Config) -> int:
    from voip_sos.aio.user_agent import Answered, EarlyMedia, Ended, Key, Ringing
    from voip_sos.rtp import Prompt

    try:
        if args.text:
            prompt = Prompt.from_pcm(_render_text(cfg, args.text), name="text")
        else:
            prompt = Prompt.from_wav(args.prompt) if args.prompt else _tone()
    except (MediaError, VoipSosError) as exc:
        print(f"prompt: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        trace = _Trace()
        ua = await _started(cfg, trace)
        answered = False
        try:
            if cfg.sip.registrar is not None:
                reg = await asyncio.wait_for(ua.register(), 40)
                trace.line(f"registration {reg.state}: {reg.status} {reg.reason}")
            call = await ua.call(
                args.to, prompt, loop=not args.no_loop, gap_s=1.0, max_s=args.seconds, ring_timeout_s=60.0
            )
            while True:
                event = await call.events.get()
                if isinstance(event, Ringing):
                    trace.line(f"ringing ({event.status})")
                elif isinstance(event, EarlyMedia):
                    trace.line(f"early media from {event.media.remote_addr}:{event.media.remote_port}")
                elif isinstance(event, Answered):
                    answered = True
                    m = event.media
                    trace.line(
                        f"answered: {m.codec}/8000 pt {m.payload_type} to {m.remote_addr}:{m.remote_port}"
                        f", telephone-event pt {m.dtmf_payload_type}"
                    )
                elif isinstance(event, Key):
                    trace.line(f"key {event.digit} ({event.source})")
                elif isinstance(event, Ended):
                    s = call.media.stats
                    trace.line(f"ended by {event.by}: {event.status} {event.reason}")
                    trace.line(
                        f"rtp: {s.packets_sent} packets sent, {s.received.packets} received, "
                        f"prompt played {s.prompt_repetitions} times"
                    )
                    break
        except (VoipSosError, TimeoutError) as exc:
            trace.line(f"failed: {exc}")
        finally:
            await ua.close()
        return 0 if answered else 1

    return asyncio.run(run())


def _sms_test(args: argparse.Namespace, cfg: Config) -> int:
    async def run() -> int:
        trace = _Trace()
        ua = await _started(cfg, trace)
        try:
            if cfg.sip.registrar is not None:
                await asyncio.wait_for(ua.register(), 40)
            status = await asyncio.wait_for(ua.message(args.to, args.text), 40)
            trace.line(f"MESSAGE final status: {status if status is not None else 'no answer'}")
            return 0 if status is not None and 200 <= status < 300 else 1
        finally:
            await ua.close()

    return asyncio.run(run())
