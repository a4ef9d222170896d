"""`voip-sos prompts render|text|say` against a real SQLite directory, real Piper and espeak-ng."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.voice.conftest import SAMPLES
from voip_sos.cli import main
from voip_sos.directory import Contact, Directory, Stb


async def _add_all(url: str) -> None:
    d = await Directory.open(url)
    try:
        for i, sub in enumerate(SAMPLES):
            stbs = (Stb(ip=f"10.0.0.{i + 1}"),)
            contacts = (Contact(name="Daughter", phone=f"+861380000000{i}"),)
            await d.add(dataclasses.replace(sub, stbs=stbs, contacts=contacts))
    finally:
        await d.close()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    repo = Path(__file__).resolve().parents[2]
    path = tmp_path / "config.yaml"
    path.write_text(
        f"directory:\n  url: sqlite+aiosqlite:///{tmp_path / 'dir.db'}\n"
        f"voice:\n  cache_dir: {tmp_path / 'prompts'}\n  fallback_dir: {repo / 'audio'}\n",
        encoding="utf-8",
    )
    asyncio.run(_add_all(f"sqlite+aiosqlite:///{tmp_path / 'dir.db'}"))
    return path


def test_prompts_text_prints_the_normalised_text(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config_file), "prompts", "text", "--uid", "10023"]) == 0
    out = capsys.readouterr().out.strip()
    assert "Wang Li, subscriber number one zero zero two three, needs help at twelve Harbour Street" in out
    # A Mandarin-speaking subscriber: the centre's English message and the family's Mandarin one.
    assert main(["--config", str(config_file), "prompts", "text", "--uid", "SOS-77"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[en] ") and lines[1].startswith("[zh] ")
    assert "用户号码艾丝欧艾丝，七七" in lines[1]
    assert main(["--config", str(config_file), "prompts", "text", "--uid", "nobody"]) == 1


def test_prompts_render_summary_and_cache(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--config", str(config_file), "prompts", "render"]
    assert main([*args, "--all", "--jobs", "2"]) == 0
    assert capsys.readouterr().out.strip() == "rendered 4, already cached 0, failed 0"
    assert main([*args, "--all"]) == 0
    assert capsys.readouterr().out.strip() == "rendered 0, already cached 4, failed 0"
    assert main([*args, "--uid", "10023", "--force"]) == 0
    assert capsys.readouterr().out.strip() == "rendered 1, already cached 0, failed 0"


def test_prompts_render_exits_1_when_rendering_fails(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voip_sos.voice.models import default_model

    src = default_model("en")
    assert src is not None
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    Path(f"{bad}.json").write_text(Path(f"{src}.json").read_text(encoding="utf-8"), encoding="utf-8")
    text = config_file.read_text(encoding="utf-8") + f"  models:\n    en: {bad}\n"
    config_file.write_text(text, encoding="utf-8")
    assert main(["--config", str(config_file), "prompts", "render", "--uid", "10023"]) == 1
    assert capsys.readouterr().out.strip() == "rendered 0, already cached 0, failed 1"


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
def test_prompts_say_g711_decodes_back_close_to_the_pcm(
    config_file: Path, tmp_path: Path, codec: str
) -> None:
    pcm_path, g711_path = tmp_path / "pcm.wav", tmp_path / f"{codec}.wav"
    base = ["--config", str(config_file), "prompts", "say", "--uid", "10023"]
    assert main([*base, "--out", str(pcm_path)]) == 0
    assert main([*base, "--out", str(g711_path), "--codec", codec]) == 0
    info = soundfile.info(str(g711_path))
    assert (info.samplerate, info.subtype) == (8000, "ULAW" if codec == "ulaw" else "ALAW")
    pcm, _ = soundfile.read(str(pcm_path), dtype="int16")
    decoded, _ = soundfile.read(str(g711_path), dtype="int16")
    assert len(decoded) == len(pcm)
    noise = decoded.astype(np.float64) - pcm
    snr_db = 10 * np.log10(np.sum(pcm.astype(np.float64) ** 2) / np.sum(noise**2))
    assert snr_db > 30.0  # G.711 gives ~35-38 dB on speech at this level


def test_prompts_say_arbitrary_text(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.wav"
    args = ["--config", str(config_file), "prompts", "say", "--text", "Test call 1 2 3.", "--language", "en"]
    assert main([*args, "--out", str(out)]) == 0
    assert "voice piper" in capsys.readouterr().out
    audio, rate = soundfile.read(str(out), dtype="int16")
    assert rate == 8000 and 1.0 < len(audio) / rate < 6.0
    zh = tmp_path / "zh.wav"
    args = ["--config", str(config_file), "prompts", "say", "--text", "测试，1 2 3", "--language", "zh"]
    assert main([*args, "--out", str(zh)]) == 0
    assert "voice espeak" in capsys.readouterr().out


def test_config_check_refuses_downloading_voice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "zh_CN-x-medium.onnx"
    model.write_bytes(b"\0")
    Path(f"{model}.json").write_text(json.dumps({"phoneme_type": "pinyin", "language": {"code": "zh_CN"}}))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"voice:\n  models:\n    zh: {model}\n", encoding="utf-8")
    assert main(["--config", str(cfg), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "voice.models.zh" in err and "would download" in err
