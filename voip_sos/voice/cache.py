"""Content-addressed prompt cache: one 8 kHz 16-bit WAV per rendered text segment.

Key = SHA-256 over the text, the voice (model file digest and its JSON, or espeak-ng version and
voice), the synthesis settings and PIPELINE_VERSION. Same key, same bytes: a hit is served from disk
without loading any model. Files are written to a temporary name in the same folder, fsynced and
renamed (POSIX rename is atomic), so a render killed half-way leaves no partial entry, at worst a
`*.tmp` file that the next scan removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile

from voip_sos.voice.dsp import RATE_HZ
from voip_sos.voice.models import VoiceSpec, espeak_version, file_digest

__all__ = ["PIPELINE_VERSION", "CacheStats", "PromptCache", "segment_key"]

logger = logging.getLogger(__name__)

# Bump when anything after synthesis changes the bytes (filters, level, lead-in, format).
PIPELINE_VERSION = 2
_SUFFIX = ".wav"
_TMP_SUFFIX = ".tmp"


def _voice_identity(spec: VoiceSpec) -> dict[str, str]:
    if spec.engine == "piper":
        return {"engine": "piper", "model": file_digest(spec.model), "config": file_digest(spec.config)}
    return {"engine": "espeak", "voice": spec.model, "version": espeak_version()}


def segment_key(text: str, spec: VoiceSpec, settings: dict[str, Any]) -> str:
    """The cache key of one rendered text segment."""
    material = {
        "pipeline": PIPELINE_VERSION,
        "language": spec.language,
        "text": text,
        "voice": _voice_identity(spec),
        "settings": settings,
    }
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def encode_wav(pcm: npt.NDArray[np.int16]) -> bytes:
    """16-bit mono PCM WAV bytes at 8 kHz."""
    buf = io.BytesIO()
    soundfile.write(buf, pcm, RATE_HZ, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def decode_wav(data: bytes) -> npt.NDArray[np.int16]:
    pcm, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    if rate != RATE_HZ or pcm.ndim != 1:
        raise ValueError(f"cached prompt is not 8 kHz mono (rate {rate}, shape {pcm.shape})")
    return np.asarray(pcm, dtype=np.int16)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see either nothing or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    bytes: int


class PromptCache:
    """The folder of rendered segments. Safe to share between processes (atomic renames)."""

    def __init__(self, root: str | Path, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._sizes: dict[str, int] | None = None
        self._total = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str) -> npt.NDArray[np.int16] | None:
        """The cached PCM for `key`, or None. A hit refreshes the entry's age for eviction."""
        p = self.path(key)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return None
        try:
            pcm = decode_wav(data)
        except (ValueError, RuntimeError, soundfile.LibsndfileError):
            logger.warning("corrupt cache entry removed", extra={"key": key})
            with contextlib.suppress(OSError):
                p.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(p)
        return pcm

    def put(self, key: str, pcm: npt.NDArray[np.int16]) -> int:
        """Store PCM under `key` atomically; returns the file size in bytes."""
        data = encode_wav(pcm)
        write_atomic(self.path(key), data)
        if self._sizes is not None:
            self.note(key, len(data))
        return len(data)

    def contains(self, key: str) -> bool:
        return self.path(key).is_file()

    def scan(self) -> CacheStats:
        """Index sizes on disk and remove temporaries left by killed renders."""
        sizes: dict[str, int] = {}
        if self.root.is_dir():
            for sub in self.root.iterdir():
                # Segment folders are the first two hex digits of the key; others (messages/, the
                # per-incident WAVs behind SMS voice links) are not segments and not evicted here.
                if not sub.is_dir() or len(sub.name) != 2:
                    continue
                for entry in os.scandir(sub):
                    if entry.name.endswith(_TMP_SUFFIX):
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                    elif entry.name.endswith(_SUFFIX):
                        sizes[entry.name[: -len(_SUFFIX)]] = entry.stat().st_size
        self._sizes = sizes
        self._total = sum(sizes.values())
        return CacheStats(len(sizes), self._total)

    def note(self, key: str, size: int) -> None:
        """Record an entry written by another process (a render worker)."""
        if self._sizes is None:
            self.scan()
        assert self._sizes is not None
        self._total += size - self._sizes.get(key, 0)
        self._sizes[key] = size

    def total_bytes(self) -> int:
        if self._sizes is None:
            self.scan()
        return self._total

    def has_room(self, extra: int = 0) -> bool:
        return self.max_bytes is None or self.total_bytes() + extra <= self.max_bytes

    def evict(self, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """Delete least-recently-used entries until under `max_bytes`; `keep` is never deleted."""
        if self.max_bytes is None:
            return 0
        if self._sizes is None:
            self.scan()
        assert self._sizes is not None
        total = self._total
        if total <= self.max_bytes:
            return 0
        ages: list[tuple[float, str]] = []
        for key in self._sizes:
            if key in keep:
                continue
            try:
                ages.append((self.path(key).stat().st_mtime, key))
            except FileNotFoundError:
                ages.append((0.0, key))
        ages.sort()
        removed = 0
        for _, key in ages:
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                self.path(key).unlink()
            total -= self._sizes.pop(key)
            removed += 1
        self._total = total
        return removed
