"""Audio helpers for the RTP tests: real sox renders test signals; soundfile reads them back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

ROW_HZ = (697, 770, 852, 941)
COL_HZ = (1209, 1336, 1477, 1633)
KEYS = ("123A", "456B", "789C", "*0#D")


def sox(*args: str | Path) -> None:
    """Run sox; a missing sox is a test failure, never a skip."""
    exe = shutil.which("sox")
    if exe is None:
        pytest.fail("sox is not installed (scripts/setup.sh installs it)")
    subprocess.run([exe, *map(str, args)], check=True, capture_output=True, timeout=60)


def read_pcm(path: Path) -> npt.NDArray[np.int16]:
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == 8000
    return data if data.ndim == 1 else data[:, 0]


def key_freqs(key: str) -> tuple[int, int]:
    for r, row in enumerate(KEYS):
        if key in row:
            return ROW_HZ[r], COL_HZ[row.index(key)]
    raise ValueError(key)


def dtmf_tone(path: Path, key: str, seconds: float, row_db: float = -10.0, col_db: float = -10.0) -> Path:
    """One key as a two-tone 8 kHz 16-bit WAV made by sox (each tone at its own level re full scale)."""
    low, high = key_freqs(key)
    a, b = path.with_suffix(".row.wav"), path.with_suffix(".col.wav")
    sox(
        "-n",
        "-r",
        "8000",
        "-b",
        "16",
        "-c",
        "1",
        a,
        "synth",
        f"{seconds}",
        "sine",
        f"{low}",
        "vol",
        f"{row_db}dB",
    )
    sox(
        "-n",
        "-r",
        "8000",
        "-b",
        "16",
        "-c",
        "1",
        b,
        "synth",
        f"{seconds}",
        "sine",
        f"{high}",
        "vol",
        f"{col_db}dB",
    )
    sox("-m", "-v", "1", a, "-v", "1", b, path)
    return path


def silence(path: Path, seconds: float) -> Path:
    sox("-n", "-r", "8000", "-b", "16", "-c", "1", path, "trim", "0", f"{seconds}")
    return path


def dtmf_sequence(
    tmp: Path, keys: str, tone_s: float, gap_s: float, **levels: float
) -> npt.NDArray[np.int16]:
    """Keys with gaps between them (and around them), concatenated by sox."""
    parts: list[Path] = [silence(tmp / "lead.wav", gap_s)]
    for i, key in enumerate(keys):
        parts.append(dtmf_tone(tmp / f"key{i}.wav", key, tone_s, **levels))
        parts.append(silence(tmp / f"gap{i}.wav", gap_s))
    out = tmp / "sequence.wav"
    sox(*parts, out)
    return read_pcm(out)
