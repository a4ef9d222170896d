"""Fixtures for voice tests: sample subscribers and a configuration with a private cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from voip_sos.config import Config, load_config
from voip_sos.directory.records import Address, Subscriber

REPO = Path(__file__).resolve().parents[2]


def subscriber(
    uid: str = "10023",
    name: str = "Wang Li",
    language: str = "en",
    line: str = "12 Harbour St.",
    **parts: str,
) -> Subscriber:
    address = Address(line=line, **parts)
    return Subscriber(uid=uid, name=name, language=language, address=address, contacts=(), stbs=())


SAMPLES = (
    subscriber(building="3", unit="2", floor="5", room="502"),
    subscriber(uid="4781906", name="Maria Gonzalez", line="1205 St. Mary's Rd., Apt. 4B"),
    subscriber(
        uid="SOS-77",
        name="王丽",
        language="zh",
        line="北京市朝阳区建国路88号",
        building="3",
        unit="2",
        room="1101",
    ),
)


def make_config(tmp_path: Path, **voice: object) -> Config:
    env = {
        "VOIP_SOS_VOICE_CACHE_DIR": str(tmp_path / "prompts"),
        "VOIP_SOS_VOICE_FALLBACK_DIR": str(REPO / "audio"),
        "VOIP_SOS_DIRECTORY_URL": f"sqlite+aiosqlite:///{tmp_path / 'dir.db'}",
    }
    for k, v in voice.items():
        env[f"VOIP_SOS_VOICE_{k.upper()}"] = str(v)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text("# defaults; overrides come from the environment below\n", encoding="utf-8")
    return load_config(path, environ=env)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path)
