"""baresip as the callee: it records what it hears (the prompt, looped) and sends keys as RFC 4733
events and as in-band tones; our Call must report each key once."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.peers import Baresip, free_port, free_port_pair, wait_udp_listening
from voip_sos.aio.user_agent import Call, Key, UserAgent
from voip_sos.config import Config, HostPort, PortRange, RtpConfig, SipConfig
from voip_sos.rtp import Prompt

pytestmark = pytest.mark.peers
RATE = 8000


def _noise_prompt(seconds: float = 1.0, seed: int = 7) -> np.ndarray:
    """Band-limited noise: sharp autocorrelation, survives G.711."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(RATE * seconds))
    x = np.convolve(x, np.ones(4) / 4, mode="same")
    return (x / np.max(np.abs(x)) * 12000).astype(np.int16)


def _dtmf_wav(path: Path, keys: str) -> None:
    freqs = {"1": (697, 1209), "9": (852, 1477), "5": (770, 1336)}
    chunks = [np.zeros(RATE // 2)]
    for k in keys:
        lo, hi = freqs[k]
        t = np.arange(int(RATE * 0.12)) / RATE
        chunks += [0.35 * (np.sin(2 * np.pi * lo * t) + np.sin(2 * np.pi * hi * t)), np.zeros(RATE // 2)]
    pcm = (np.concatenate(chunks) * 32767 * 0.8).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


def _recording(folder: Path) -> np.ndarray:
    """What baresip heard (its sndfile `dump-*-dec.wav`)."""
    (rec,) = list(folder.glob("dump-*-dec.wav"))
    with wave.open(str(rec)) as w:
        assert w.getframerate() == RATE
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)


@asynccontextmanager
async def _ua() -> AsyncIterator[UserAgent]:
    rtp = free_port_pair()
    cfg = Config(
        sip=SipConfig(listen=HostPort("127.0.0.1", 0), domain="127.0.0.1", username="voip-sos"),
        rtp=RtpConfig(ports=PortRange(rtp, rtp + 9)),
    )
    ua = UserAgent(cfg)
    await ua.start()
    try:
        yield ua
    finally:
        await ua.close(timeout_s=2.0)


async def _wait_keys(call: Call, n: int, timeout_s: float) -> list[Key]:
    for _ in range(int(timeout_s / 0.05)):
        keys = [e for e in call.history if isinstance(e, Key)]
        if len(keys) >= n:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # anything reported twice would show up now
    return [e for e in call.history if isinstance(e, Key)]


async def test_callee_hears_every_loop_of_the_prompt(tmp_path: Path) -> None:
    pcm = _noise_prompt()
    port = free_port()
    with Baresip(port, "bob", record_dir=tmp_path) as phone:
        await wait_udp_listening(port, peer=phone)
        async with _ua() as ua:
            call = await ua.call(f"sip:bob@127.0.0.1:{port}", Prompt.from_pcm(pcm), gap_s=0.5, max_s=3.3)
            assert await asyncio.wait_for(call.answered(), 5) is not None
            ended = await asyncio.wait_for(call.ended(), 8)
            assert ended.by == "local"
        await asyncio.sleep(0.5)
    heard = _recording(tmp_path)
    ref = pcm.astype(np.float64)
    corr = np.correlate(heard, ref, mode="valid") / (np.linalg.norm(ref) ** 2)
    peaks = []
    c = corr.copy()
    for _ in range(4):
        i = int(np.argmax(c))
        if c[i] < 0.5:
            break
        peaks.append(i)
        c[max(0, i - RATE // 2) : i + RATE // 2] = 0
    peaks.sort()
    assert len(peaks) >= 2, f"prompt found {len(peaks)} times; max corr {corr.max():.2f}"
    spacing = np.diff(peaks) / RATE
    print(f"prompt found at {[p / RATE for p in peaks]} s, spacing {spacing} s")
    # One prompt (1.0 s) + gap (0.5 s) apart, to within one packet: no gap or burst in between.
    assert np.all(np.abs(spacing - 1.5) <= 0.02)


async def test_rfc4733_keys_from_baresip_reported_once_each() -> None:
    port = free_port()
    with Baresip(port, "bob") as phone:
        await wait_udp_listening(port, peer=phone)
        async with _ua() as ua:
            call = await ua.call(f"sip:bob@127.0.0.1:{port}", Prompt.from_pcm(_noise_prompt()))
            assert await asyncio.wait_for(call.answered(), 5) is not None
            await asyncio.sleep(0.5)
            await phone.command("sndcode", "1")
            await asyncio.sleep(0.6)
            await phone.command("sndcode", "9")
            keys = await _wait_keys(call, 2, 5)
            assert [(k.digit, k.source) for k in keys] == [("1", "rfc4733"), ("9", "rfc4733")]
            call.hangup()
            await asyncio.wait_for(call.ended(), 5)


async def test_inband_keys_from_baresip_audio_reported_once_each(tmp_path: Path) -> None:
    wav = tmp_path / "keys.wav"
    _dtmf_wav(wav, "19")
    port = free_port()
    with Baresip(port, "bob", audio_source=wav) as phone:
        await wait_udp_listening(port, peer=phone)
        async with _ua() as ua:
            call = await ua.call(f"sip:bob@127.0.0.1:{port}", Prompt.from_pcm(_noise_prompt()))
            assert await asyncio.wait_for(call.answered(), 5) is not None
            keys = await _wait_keys(call, 2, 5)
            assert [(k.digit, k.source) for k in keys] == [("1", "inband"), ("9", "inband")]
            call.hangup()
            await asyncio.wait_for(call.ended(), 5)
