"""A ready-to-play message: 8 kHz 16-bit PCM plus its G.711 payloads, assembled from cached segments.

Layout of a full message (what the RTP sender loops):

    lead-in 0.25 s | opening | 0.4 s | body (who, where) | 0.4 s | closing | 1.0 s tail

`body_start` is the sample where the personal part begins, so a sender that started playing the
opening alone (answered before the body was rendered) continues from there without repeating it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from voip_sos.rtp import g711
from voip_sos.voice.cache import decode_wav, encode_wav
from voip_sos.voice.dsp import RATE_HZ

__all__ = [
    "LEAD_IN_S",
    "MAX_MESSAGE_S",
    "PART_PAUSE_S",
    "TAIL_S",
    "PerPrompt",
    "Prompt",
    "assemble",
    "load_fallback",
]

V = TypeVar("V")

LEAD_IN_S = 0.25
"""Silence before the first word: the far end's jitter buffer and echo canceller settle on it."""
PART_PAUSE_S = 0.4
TAIL_S = 1.0
"""Silence after the closing: one loop is clearly separated from the next."""
MAX_MESSAGE_S = 30.0


@dataclass(frozen=True, slots=True)
class Prompt:
    """Audio a call plays, in every form the RTP sender needs."""

    language: str
    text: str
    """The exact words (after normalisation); for a fallback, the generic text."""
    pcm: npt.NDArray[np.int16] = field(repr=False)
    """8 kHz mono 16-bit samples."""
    body_start: int
    """Sample index where the personal part starts (== len(pcm) for an opening-only prompt)."""
    source: str
    """`piper`, `espeak` (the Mandarin fallback voice) or `fallback` (the generic recorded message)."""
    warnings: tuple[str, ...] = ()
    # G.711 forms, made on first use: a surge assembles a message per incident and the RTP side
    # encodes its own frames, so encoding both laws up front was a tenth of serve's loop (bench).
    _g711: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def alaw(self) -> bytes:
        """G.711 A-law payload (PCMA), one byte per sample."""
        found = self._g711.get("alaw")
        if found is None:
            found = self._g711["alaw"] = g711.alaw_encode(self.pcm)
        return found

    @property
    def ulaw(self) -> bytes:
        """G.711 μ-law payload (PCMU), one byte per sample."""
        found = self._g711.get("ulaw")
        if found is None:
            found = self._g711["ulaw"] = g711.ulaw_encode(self.pcm)
        return found

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / RATE_HZ

    @property
    def rate_hz(self) -> int:
        return RATE_HZ

    def wav(self) -> bytes:
        """The PCM as a 16-bit 8 kHz WAV file."""
        return encode_wav(self.pcm)

    @classmethod
    def from_pcm(
        cls,
        pcm: npt.NDArray[np.int16],
        *,
        language: str,
        text: str,
        source: str,
        body_start: int | None = None,
        warnings: tuple[str, ...] = (),
    ) -> Prompt:
        pcm = np.ascontiguousarray(pcm, dtype=np.int16)
        pcm.setflags(write=False)
        return cls(
            language=language,
            text=text,
            pcm=pcm,
            body_start=len(pcm) if body_start is None else body_start,
            source=source,
            warnings=warnings,
        )


class PerPrompt(Generic[V]):
    """Something made from a prompt (its RTP frames, its WAV file), kept for the `size` prompts
    seen last. Keyed by identity: a prompt is immutable, and one object serves every call and text
    of an incident; holding the prompt keeps its id from being reused while it is kept."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._kept: dict[int, tuple[Prompt, V]] = {}

    def get(self, prompt: Prompt) -> V | None:
        found = self._kept.get(id(prompt))
        return found[1] if found is not None and found[0] is prompt else None

    def put(self, prompt: Prompt, value: V) -> V:
        self._kept[id(prompt)] = (prompt, value)
        while len(self._kept) > self._size:
            del self._kept[next(iter(self._kept))]
        return value


def _zeros(seconds: float) -> npt.NDArray[np.int16]:
    return np.zeros(round(seconds * RATE_HZ), dtype=np.int16)


def opening_only(opening: npt.NDArray[np.int16], *, language: str, text: str, source: str) -> Prompt:
    """The opening sentence alone, laid out exactly as it starts the full message."""
    pcm = np.concatenate([_zeros(LEAD_IN_S), opening, _zeros(PART_PAUSE_S)])
    return Prompt.from_pcm(pcm, language=language, text=text, source=source)


def assemble(
    opening: npt.NDArray[np.int16],
    body: npt.NDArray[np.int16],
    closing: npt.NDArray[np.int16],
    *,
    language: str,
    text: str,
    source: str,
) -> Prompt:
    """Join the three rendered parts into the looped message; warn when it runs over 30 s."""
    head = np.concatenate([_zeros(LEAD_IN_S), opening, _zeros(PART_PAUSE_S)])
    pcm = np.concatenate([head, body, _zeros(PART_PAUSE_S), closing, _zeros(TAIL_S)])
    spoken_s = (len(pcm) - round(TAIL_S * RATE_HZ)) / RATE_HZ
    warnings: tuple[str, ...] = ()
    if spoken_s > MAX_MESSAGE_S:
        warnings = (
            f"message is {spoken_s:.1f} s, over {MAX_MESSAGE_S:.0f} s (long address); it is spoken in full",
        )
    return Prompt.from_pcm(
        pcm, language=language, text=text, source=source, body_start=len(head), warnings=warnings
    )


def fallback_path(language: str, audio_dir: str | Path) -> Path:
    return Path(audio_dir) / f"generic-{language}.wav"


def load_fallback(language: str, audio_dir: str | Path, text: str = "") -> Prompt:
    """The generic recorded message shipped in audio/ (played when rendering fails)."""
    path = fallback_path(language, audio_dir)
    if not path.is_file():
        path = fallback_path("en", audio_dir)
    pcm = decode_wav(path.read_bytes())
    return Prompt.from_pcm(pcm, language=language, text=text, source="fallback", body_start=0)
