"""The prompt service at SOS time and in the background, with real worker processes and Piper."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from tests.voice.conftest import SAMPLES, make_config, subscriber
from voip_sos.config import Config
from voip_sos.errors import ConfigError
from voip_sos.voice.cache import PromptCache
from voip_sos.voice.models import default_model
from voip_sos.voice.service import PromptService


async def _started(cfg: Config) -> PromptService:
    svc = PromptService(cfg)
    await svc.start()
    return svc


async def test_missing_message_does_not_delay_the_invite(cfg: Config) -> None:
    svc = await _started(cfg)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        loop = asyncio.get_running_loop()
        sub = subscriber(uid="90001", room="901")
        assert not svc.cache.contains(svc.segments(sub, "en").keys[1])
        pressed = time.perf_counter()
        # What the incident runner does: start the message, then send the INVITE at once.
        pending = svc.begin(sub, "en", incident="t1")
        tx.sendto(b"INVITE sip:120@127.0.0.1 SIP/2.0\r\n\r\n", rx.getsockname())
        data = await asyncio.wait_for(loop.sock_recv(rx, 2048), 2.0)
        invite_s = time.perf_counter() - pressed
        assert data.startswith(b"INVITE")
        # The INVITE was on the wire while the message was still being rendered.
        assert not pending.done()
        assert invite_s < 0.1
        assert pending.opening.source == "piper" and pending.opening.duration_s > 2.0
        prompt = await asyncio.wait_for(pending.ready(), 30)
        assert prompt.source == "piper"
        assert prompt.pcm[: pending.opening.body_start].tobytes() == pending.opening.pcm.tobytes()
        assert svc.cache.contains(svc.segments(sub, "en").keys[1])
        # Second time it is a cache hit.
        again = await svc.ensure(sub, "en")
        assert again.pcm.tobytes() == prompt.pcm.tobytes()
        # The file the SMS voice link serves is exactly what the call plays.
        path = await svc.wav_path(prompt)
        assert path.read_bytes() == prompt.wav()
        assert await svc.wav_path(again) == path
    finally:
        rx.close()
        tx.close()
        await svc.close()


def _broken_model(folder: Path) -> Path:
    """A model that passes `config check` (file and JSON in place) but cannot be loaded."""
    src = default_model("en")
    assert src is not None
    bad = folder / "voices" / "broken.onnx"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not an onnx model")
    (folder / "voices" / "broken.onnx.json").write_text(Path(f"{src}.json").read_text())
    return bad


async def test_generic_message_when_rendering_fails(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(tmp_path, models=json.dumps({"en": str(_broken_model(tmp_path))}))
    caplog.set_level(logging.WARNING)
    svc = await _started(cfg)
    try:
        prompt = await svc.ensure(SAMPLES[0], "en", incident="t2")
        assert prompt.source == "fallback"
        assert prompt.duration_s > 5 and prompt.pcm.any()
        assert len(prompt.alaw) == len(prompt.pcm)
        assert svc.opening("en").source == "fallback"
        assert (await svc.wav_path(prompt)).name == "generic-en.wav"
        assert any("generic message" in r.getMessage() for r in caplog.records)
    finally:
        await svc.close()


async def test_prerender_queue_fills_the_cache_at_low_priority(cfg: Config) -> None:
    svc = await _started(cfg)
    try:
        zh_sub = SAMPLES[2]
        assert svc.prerender(SAMPLES[0]) == 1
        assert svc.prerender(SAMPLES[0]) == 0  # already queued
        assert svc.prerender(zh_sub) == 2  # centre language en, subscriber's own zh
        await asyncio.wait_for(svc.drain(), 60)
        for sub in (SAMPLES[0], zh_sub):
            for lang in {"en", sub.language}:
                assert svc.cache.contains(svc.segments(sub, lang).keys[1])
        assert svc._background is not None
        niceness = await asyncio.wrap_future(svc._background.submit(os.nice, 0))
        assert niceness == 19
    finally:
        await svc.close()


def test_cache_is_bounded(tmp_path: Path) -> None:
    import numpy as np

    cache = PromptCache(tmp_path, max_bytes=100_000)
    pcm = np.ones(20_000, dtype=np.int16)  # ~40 kB each
    keys = [f"{i:02d}" + "f" * 62 for i in range(5)]
    for i, key in enumerate(keys):
        cache.put(key, pcm)
        os.utime(cache.path(key), (1000 + i, 1000 + i))
    cache.scan()
    assert cache.evict(keep={keys[0]}) == 3
    assert cache.total_bytes() <= 100_000
    assert cache.contains(keys[0]) and cache.contains(keys[4])
    assert not cache.contains(keys[1])


def test_config_check_refuses_a_voice_that_downloads(tmp_path: Path) -> None:
    model = tmp_path / "zh_CN-test-medium.onnx"
    model.write_bytes(b"\0")
    cfg_json = {"phoneme_type": "pinyin", "language": {"code": "zh_CN"}, "espeak": {"voice": "cmn"}}
    Path(f"{model}.json").write_text(json.dumps(cfg_json))
    with pytest.raises(ConfigError) as exc:
        make_config(tmp_path, models=json.dumps({"zh": str(model)}))
    text = str(exc.value)
    assert "voice.models.zh" in text and "download" in text and "g2pW" in text
    # Provisioned offline (g2pW unpacked beside the model): the download check passes.
    (tmp_path / "g2pW").mkdir()
    (tmp_path / "g2pW" / "g2pw.onnx").write_bytes(b"\0")
    try:
        make_config(tmp_path, models=json.dumps({"zh": str(model)}))
    except ConfigError as again:
        assert "download" not in str(again)


def test_missing_or_wrong_language_models_are_refused(tmp_path: Path) -> None:
    # A model file not there (yet) passes loading the configuration but not using the voice.
    cfg = make_config(tmp_path, models=json.dumps({"zh": str(tmp_path / "nope.onnx")}))
    with pytest.raises(ConfigError, match=r"voice.models.zh: model file not found"):
        PromptService(cfg)
    src = default_model("en")
    assert src is not None
    with pytest.raises(ConfigError, match=r"voice.models.zh: .* is a voice for 'en_US', not 'zh'"):
        make_config(tmp_path, models=json.dumps({"zh": src}))


async def test_a_killed_render_worker_is_replaced(cfg: Config) -> None:
    import signal

    from voip_sos.voice.render import worker_pid

    svc = await _started(cfg)
    try:
        assert svc._urgent is not None
        pids = {await asyncio.wrap_future(svc._urgent.submit(worker_pid)) for _ in range(4)}
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        first = await svc.ensure(subscriber(uid="7001"), "en")
        # The render that met the dead pool gets the generic message, the pool is started again ...
        assert first.source in ("fallback", "piper")
        again = await asyncio.wait_for(svc.ensure(subscriber(uid="7002"), "en"), 30)
        # ... and the next message is rendered normally.
        assert again.source == "piper"
    finally:
        await svc.close()


async def test_service_refuses_to_start_without_the_generic_message(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, fallback_dir=str(tmp_path / "empty"))
    svc = PromptService(cfg)
    try:
        with pytest.raises(ConfigError, match=r"voice\.fallback_dir: generic message for 'en' unusable"):
            await svc.start()
    finally:
        await svc.close()


async def test_a_late_personal_message_still_arrives(tmp_path: Path) -> None:
    # A render timeout no render can meet: ready() gives the generic message at once ...
    cfg = make_config(tmp_path, render_timeout_s="0.001")
    svc = await _started(cfg)
    try:
        sub = subscriber(uid="8001", room="801")
        pending = svc.begin(sub, "en")
        assert (await asyncio.wait_for(pending.ready(), 10)).source == "fallback"
        # ... and the render that kept going delivers the personal message for the next loop.
        late = await asyncio.wait_for(pending.personal(), 60)
        assert late is not None and late.source == "piper"
        assert "eight zero one" in late.text
        assert svc.cache.contains(svc.segments(sub, "en").keys[1])
    finally:
        await svc.close()


async def test_sweep_queues_what_another_process_added(cfg: Config) -> None:
    import dataclasses

    from voip_sos.directory import Contact, Directory, Stb

    directory = await Directory.open(cfg.directory.url)
    svc = await _started(cfg)
    try:
        for i, sub in enumerate(SAMPLES):
            stbs = (Stb(ip=f"10.1.0.{i + 1}"),)
            contacts = (Contact(name="Son", phone=f"+8613900000{i:02d}"),)
            await directory.add(dataclasses.replace(sub, stbs=stbs, contacts=contacts))
        # Three subscribers, one of them Mandarin-speaking: four messages (centre en + own zh).
        assert await svc.sweep(directory, page=2) == 4
        await asyncio.wait_for(svc.drain(), 60)
        assert await svc.sweep(directory) == 0
    finally:
        await svc.close()
        await directory.close()


async def test_prerendering_stops_at_the_cache_bound(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, cache_max_mb="1")
    svc = await _started(cfg)
    try:
        subs = [subscriber(uid=f"{9000 + i}") for i in range(12)]
        assert svc.prerender_many(subs) == 12
        await asyncio.wait_for(svc.drain(), 120)
        # About 0.17 MB each: a 1 MB cache (with the fixed parts in it) holds only some of them.
        cached = sum(svc.cache.contains(svc.segments(s, "en").keys[1]) for s in subs)
        assert 2 <= cached < 12
        assert svc.cache.total_bytes() <= 1024 * 1024 + 200_000
    finally:
        await svc.close()
