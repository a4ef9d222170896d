"""A prompt: 8 kHz mono 16-bit PCM cut into 20 ms frames, G.711-encoded once per codec and shared.

The incident layer renders one message and plays it to several calls; encoding it once per codec
(not once per call, not once per packet) keeps 500 looping calls cheap.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from voip_sos.errors import MediaError
from voip_sos.rtp.g711 import CLOCK_RATE_HZ, SILENCE_BYTE, Codec, PcmArray, encode

__all__ = ["SAMPLES_PER_FRAME", "Prompt"]

SAMPLES_PER_FRAME = 160  # 20 ms at 8000 Hz (RFC 3551 §4.5: G.711 default packetization)


class Prompt:
    """Immutable audio to play; `frames(codec)` gives its 160-byte G.711 payloads."""

    __slots__ = ("_frames", "name", "pcm")

    def __init__(self, pcm: PcmArray, name: str = "") -> None:
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise MediaError("prompt PCM must be a 1-D int16 array")
        if pcm.size == 0:
            raise MediaError("prompt is empty")
        self.pcm: PcmArray = pcm.copy()
        self.pcm.flags.writeable = False
        self.name = name
        self._frames: dict[Codec, tuple[bytes, ...]] = {}

    @classmethod
    def from_pcm(cls, pcm: PcmArray | bytes, sample_rate: int = CLOCK_RATE_HZ, name: str = "") -> Prompt:
        """From int16 samples or little-endian PCM16 bytes; only 8 kHz is accepted (no resampling here)."""
        if sample_rate != CLOCK_RATE_HZ:
            raise MediaError(f"prompt must be 8000 Hz, got {sample_rate} Hz")
        if isinstance(pcm, bytes | bytearray):
            if len(pcm) % 2:
                raise MediaError("prompt PCM bytes must be whole 16-bit samples")
            pcm = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        return cls(pcm, name)

    @classmethod
    def from_wav(cls, path: str | Path) -> Prompt:
        """Read an 8 kHz mono 16-bit PCM WAV file."""
        try:
            with wave.open(str(path), "rb") as w:
                channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
                data = w.readframes(w.getnframes())
        except (OSError, wave.Error, EOFError) as exc:
            raise MediaError(f"cannot read prompt {path}: {exc}") from exc
        if channels != 1 or width != 2:
            raise MediaError(
                f"prompt {path} must be mono 16-bit, got {channels} channel(s) of {8 * width} bits"
            )
        return cls.from_pcm(data, rate, name=Path(path).name)

    @property
    def duration_s(self) -> float:
        """Length in seconds (before padding to whole frames)."""
        return self.pcm.size / CLOCK_RATE_HZ

    def frames(self, codec: Codec) -> tuple[bytes, ...]:
        """The prompt as 20 ms payloads, the last one padded with silence; computed once per codec."""
        frames = self._frames.get(codec)
        if frames is None:
            encoded = encode(codec, self.pcm)
            pad = -len(encoded) % SAMPLES_PER_FRAME
            encoded += bytes([SILENCE_BYTE[codec]]) * pad
            frames = tuple(
                encoded[i : i + SAMPLES_PER_FRAME] for i in range(0, len(encoded), SAMPLES_PER_FRAME)
            )
            self._frames[codec] = frames
        return frames
