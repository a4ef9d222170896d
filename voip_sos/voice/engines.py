"""Speech synthesis engines: Piper in-process (onnxruntime) and the espeak-ng fallback for Mandarin.

Runs inside render worker processes only: importing `piper` costs ~0.3 s and a model ~60 MB of RAM,
which the service process never pays (a cache hit does not come here).
"""

from __future__ import annotations

import io
import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import soundfile

from voip_sos.errors import MediaError
from voip_sos.voice.models import VoiceSpec

__all__ = ["Engine", "EspeakEngine", "PiperEngine", "SynthesisSettings", "load_engine"]

logger = logging.getLogger(__name__)

ESPEAK_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class SynthesisSettings:
    """Synthesis settings; all of them are part of the cache key. Chosen for a G.711 phone line:

    - length_scale 1.15: about 15 % slower than the voice's default, so a stressed listener can write
      the address down; slower still sounds drawn out and pushes long addresses past 30 s.
    - noise_scale 0 and noise_w 0: no random variation in timbre or timing. The voice is steadier
      (less breathy, fewer slurred syllables) and every render of the same text is bit-identical,
      on any machine, so re-rendering after a lost cache gives the same bytes.
    - sentence_pause_s 0.35: a clear gap between sentences (who / where / what to press).
    - espeak_wpm 160: a little under espeak-ng's default 175 (about 3.2 syllables a second with
      pauses): clearer over a line, and a typical address still fits well under 30 s.
    """

    length_scale: float = 1.15
    noise_scale: float = 0.0
    noise_w: float = 0.0
    sentence_pause_s: float = 0.35
    espeak_wpm: int = 160

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Engine(Protocol):
    """Turns text into float audio (full scale 1.0) at `rate_hz`."""

    rate_hz: int

    def synthesize(self, text: str) -> npt.NDArray[np.float32]: ...

    def phonemes(self, text: str) -> str: ...


class PiperEngine:
    """A Piper voice loaded in this process, single-threaded so parallel workers scale linearly."""

    def __init__(self, spec: VoiceSpec, settings: SynthesisSettings) -> None:
        import json

        import onnxruntime
        from piper import PiperConfig, PiperVoice, SynthesisConfig

        opts = onnxruntime.SessionOptions()
        # One thread per worker: the pool gives parallelism; onnxruntime's own thread pool would
        # fight the other workers for the same cores.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        with open(spec.config, encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        self._voice = PiperVoice(
            session=onnxruntime.InferenceSession(
                spec.model, sess_options=opts, providers=["CPUExecutionProvider"]
            ),
            config=config,
            # Anything a phonemizer might look for lives beside the model, never in the cwd.
            download_dir=Path(spec.model).parent,
        )
        self._syn = SynthesisConfig(
            length_scale=settings.length_scale,
            noise_scale=settings.noise_scale,
            noise_w_scale=settings.noise_w,
            normalize_audio=True,
        )
        self._pause = np.zeros(round(settings.sentence_pause_s * config.sample_rate), dtype=np.float32)
        self.rate_hz = config.sample_rate

    def synthesize(self, text: str) -> npt.NDArray[np.float32]:
        parts: list[npt.NDArray[np.float32]] = []
        for chunk in self._voice.synthesize(text, syn_config=self._syn):
            if parts:
                parts.append(self._pause)
            parts.append(np.asarray(chunk.audio_float_array, dtype=np.float32))
        if not parts:
            raise MediaError(f"piper produced no audio for {text!r}")
        return np.concatenate(parts)

    def phonemes(self, text: str) -> str:
        return " | ".join("".join(s) for s in self._voice.phonemize(text))


class EspeakEngine:
    """espeak-ng as a subprocess (the Debian binary), voice `cmn-latn-pinyin` for Mandarin."""

    def __init__(self, spec: VoiceSpec, settings: SynthesisSettings) -> None:
        self._voice = spec.model
        self._wpm = settings.espeak_wpm
        self.rate_hz = 22050

    def _run(self, args: list[str], text: str) -> bytes:
        try:
            out = subprocess.run(
                ["espeak-ng", "-v", self._voice, "-s", str(self._wpm), *args, "-b", "1", "--stdin"],
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=ESPEAK_TIMEOUT_S,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise MediaError(f"espeak-ng failed: {exc}") from exc
        return out.stdout

    def synthesize(self, text: str) -> npt.NDArray[np.float32]:
        wav = self._run(["--stdout"], text)
        audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
        if len(audio) == 0:
            raise MediaError(f"espeak-ng produced no audio for {text!r}")
        self.rate_hz = int(rate)
        peak = float(np.max(np.abs(audio)))
        return np.asarray(audio / peak if peak > 0 else audio, dtype=np.float32)

    def phonemes(self, text: str) -> str:
        return self._run(["-q", "-x"], text).decode("utf-8", "replace").strip()


def load_engine(spec: VoiceSpec, settings: SynthesisSettings) -> Engine:
    """Load the engine for a voice (Piper: reads the model, ~0.2-1 s)."""
    if spec.engine == "piper":
        return PiperEngine(spec, settings)
    return EspeakEngine(spec, settings)
