"""`voip-sos prompts render|text|say`: pre-render, show and listen to the spoken emergency messages."""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
from pathlib import Path
from typing import Any

from voip_sos.config import Config
from voip_sos.directory.records import Subscriber


def register(sub: Any) -> None:
    p = sub.add_parser("prompts", help="spoken emergency messages (render, show text, listen)")
    psub = p.add_subparsers(dest="prompts_command", metavar="ACTION")
    psub.required = True

    render = psub.add_parser("render", help="render messages into the cache (exit 1 if any failed)")
    which = render.add_mutually_exclusive_group(required=True)
    which.add_argument("--uid", help="one subscriber")
    which.add_argument("--all", action="store_true", help="every subscriber in the directory")
    render.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (default 1)")
    render.add_argument("--force", action="store_true", help="render again even if cached")
    render.set_defaults(handler=_render)

    text = psub.add_parser("text", help="print the exact text spoken (after normalisation)")
    text.add_argument("--uid", required=True)
    text.add_argument("--language", choices=("en", "zh"), help="only this language")
    text.set_defaults(handler=_text)

    say = psub.add_parser("say", help="write exactly the audio a call plays to a WAV file")
    src = say.add_mutually_exclusive_group(required=True)
    src.add_argument("--uid", help="the subscriber's message")
    src.add_argument("--text", help="arbitrary text, spoken the same way")
    say.add_argument("--language", choices=("en", "zh"), help="default: emergency.language")
    say.add_argument("--out", required=True, metavar="FILE.wav")
    say.add_argument(
        "--codec", choices=("pcm", "ulaw", "alaw"), default="pcm", help="WAV encoding (default pcm)"
    )
    say.set_defaults(handler=_say)


async def _fetch(cfg: Config, uid: str | None) -> list[Subscriber]:
    from voip_sos.directory import Directory

    d = await Directory.open(cfg.directory.url)
    try:
        if uid is not None:
            one = await d.get(uid)
            return [one] if one is not None else []
        return await d.list()
    finally:
        await d.close()


def _subscriber(cfg: Config, uid: str) -> Subscriber | None:
    found = asyncio.run(_fetch(cfg, uid))
    if not found:
        print(f"no subscriber with uid {uid!r}", file=sys.stderr)
        return None
    return found[0]


def _render(args: argparse.Namespace, cfg: Config) -> int:
    from voip_sos.voice.batch import render_batch
    from voip_sos.voice.catalog import Catalog

    if args.jobs < 1:
        print("--jobs must be at least 1", file=sys.stderr)
        return 2
    subscribers = asyncio.run(_fetch(cfg, args.uid))
    if args.uid is not None and not subscribers:
        print(f"no subscriber with uid {args.uid!r}", file=sys.stderr)
        return 1
    catalog = Catalog(cfg)
    total = sum(len(catalog.languages_for(s)) for s in subscribers)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="msg", file=sys.stderr)

    def progress(n: int) -> None:
        if bar is not None:
            bar.update(n)

    try:
        summary = render_batch(catalog, subscribers, jobs=args.jobs, force=args.force, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    line = f"rendered {summary.rendered}, already cached {summary.cached}, failed {summary.failed}"
    if summary.skipped_cache_full:
        line += f", not rendered (cache full, voice.cache_max_mb) {summary.skipped_cache_full}"
    print(line)
    return 1 if summary.failed else 0


def _text(args: argparse.Namespace, cfg: Config) -> int:
    from voip_sos.voice.catalog import Catalog

    sub = _subscriber(cfg, args.uid)
    if sub is None:
        return 1
    catalog = Catalog(cfg)
    languages = (args.language,) if args.language else catalog.languages_for(sub)
    for language in languages:
        text = catalog.segments(sub, language).text.full()
        print(f"[{language}] {text}" if len(languages) > 1 else text)
    return 0


def _wav_g711(payload: bytes, fmt_tag: int) -> bytes:
    """A WAV holding G.711 bytes as they are (format 6 = A-law, 7 = μ-law, RFC 2361), 8 kHz mono."""
    fmt = struct.pack("<HHIIHHH", fmt_tag, 1, 8000, 8000, 1, 8, 0)
    fact = struct.pack("<I", len(payload))
    pad = b"\0" if len(payload) % 2 else b""
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<I", 4)
        + fact
        + b"data"
        + struct.pack("<I", len(payload))
        + payload
        + pad
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _say(args: argparse.Namespace, cfg: Config) -> int:
    from voip_sos.voice.batch import LocalRenderer
    from voip_sos.voice.catalog import Catalog

    catalog = Catalog(cfg)
    renderer = LocalRenderer(catalog)
    language = args.language or cfg.emergency.language
    if args.text is not None:
        prompt = renderer.text(args.text, language)
    else:
        sub = _subscriber(cfg, args.uid)
        if sub is None:
            return 1
        prompt = renderer.message(sub, language)
    if args.codec == "pcm":
        data = prompt.wav()
    else:
        data = _wav_g711(
            prompt.alaw if args.codec == "alaw" else prompt.ulaw, 6 if args.codec == "alaw" else 7
        )
    Path(args.out).write_bytes(data)
    for warning in prompt.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.out}: {prompt.duration_s:.1f} s, 8000 Hz, {args.codec}, voice {prompt.source}")
    return 0
