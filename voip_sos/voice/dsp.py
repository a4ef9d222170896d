"""The audio pipeline after synthesis: telephone band, 8 kHz, speech level, peak ceiling, int16.

synthesize (22.05 kHz float) -> soxr HQ to 8 kHz -> telephone-band shaping -> active speech level
-19 dBov (ITU-T P.56 method B) -> peak ceiling -1 dBFS (look-ahead limiter) -> 16-bit PCM.

dBov here: 0 dBov is the RMS of a full-scale square wave, so a full-scale sine is -3 dBov (P.56 and
G.191 `sv56` use the same reference).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import soxr

__all__ = [
    "PEAK_CEILING_DBFS",
    "RATE_HZ",
    "TARGET_LEVEL_DBOV",
    "active_speech_level",
    "fade",
    "level_and_limit",
    "peak_dbfs",
    "silence",
    "telephone_band",
    "to_8k",
    "to_int16",
]

RATE_HZ = 8000
TARGET_LEVEL_DBOV = -19.0
PEAK_CEILING_DBFS = -1.0

# ITU-T P.56 method B constants.
_P56_TIME_CONSTANT_S = 0.03
_P56_HANGOVER_S = 0.2
_P56_MARGIN_DB = 15.9
_FULL_SCALE = 32768.0

# Telephone band: G.712 passes 300-3400 Hz. Energy below ~150 Hz is cut by the line anyway and would
# only eat level headroom; a gentle lift around 2-3.4 kHz keeps consonants (s, f, t) distinct.
_HIGHPASS_HZ = (100.0, 250.0)  # ramp from full cut to pass
_PRESENCE_HZ = (1500.0, 3000.0)  # ramp to the lift
_PRESENCE_DB = 3.0

FADE_S = 0.005

# Look-ahead limiter window: short enough to be inaudible, long enough not to distort (P.56 level
# is barely moved because only rare peaks are touched).
_LIMITER_WINDOW_S = 0.004


def to_8k(audio: npt.NDArray[np.float32], rate_hz: int) -> npt.NDArray[np.float32]:
    """Resample float audio to 8 kHz with soxr's high-quality filter (alias-free below 4 kHz)."""
    if rate_hz == RATE_HZ:
        return audio.astype(np.float32)
    out = soxr.resample(audio.astype(np.float32), rate_hz, RATE_HZ, quality="HQ")
    return np.asarray(out, dtype=np.float32)


def telephone_band(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Zero-phase shaping in the frequency domain: low cut below 250 Hz, +3 dB presence lift."""
    n = len(audio)
    if n == 0:
        return audio
    size = 1 << max(1, (n - 1).bit_length())
    spec = np.fft.rfft(audio.astype(np.float64), size)
    f = np.fft.rfftfreq(size, 1.0 / RATE_HZ)
    lo, hi = _HIGHPASS_HZ
    hp = np.clip((f - lo) / (hi - lo), 0.0, 1.0)
    hp = np.sin(hp * np.pi / 2) ** 2  # raised-cosine ramp: no ringing edge
    p_lo, p_hi = _PRESENCE_HZ
    lift = np.clip((f - p_lo) / (p_hi - p_lo), 0.0, 1.0)
    gain = hp * 10 ** (_PRESENCE_DB * lift / 20)
    return np.fft.irfft(spec * gain, size)[:n].astype(np.float32)


def _envelope(x: npt.NDArray[np.float64], rate_hz: int) -> npt.NDArray[np.float64]:
    """P.56 two-stage exponential smoothing of |x| (time constant 30 ms)."""
    g = math.exp(-1.0 / (rate_hz * _P56_TIME_CONSTANT_S))
    one_g = 1.0 - g
    p = q = 0.0
    out = np.empty(len(x))
    for i, v in enumerate(np.abs(x).tolist()):
        p = g * p + one_g * v
        q = g * q + one_g * p
        out[i] = q
    return out


def active_speech_level(audio: npt.NDArray[np.floating], rate_hz: int = RATE_HZ) -> float:
    """Active speech level in dBov (ITU-T P.56 method B); -inf for silence.

    `audio` is float with full scale 1.0 (int16 divided by 32768).
    """
    x = np.asarray(audio, dtype=np.float64)
    if len(x) == 0 or not np.any(x):
        return -math.inf
    energy = float(np.sum(x * x))
    q = _envelope(x, rate_hz)
    hangover = int(_P56_HANGOVER_S * rate_hz)
    idx = np.arange(len(x))
    # Thresholds c_j = 2^j / 2^15 for j = 0..15: 1 LSB of 16-bit up to full scale.
    levels: list[tuple[float, float]] = []  # (A_j - C_j, A_j)
    for j in range(16):
        c = 2.0**j / _FULL_SCALE
        above = q >= c
        if not above.any():
            break
        last = np.maximum.accumulate(np.where(above, idx, -(hangover + 1)))
        active = int(np.count_nonzero(idx - last <= hangover))
        a_db = 10 * math.log10(energy / active)
        levels.append((a_db - 20 * math.log10(c), a_db))
    if not levels:
        return -math.inf
    # The active level is where A_j - C_j falls to the margin M; interpolate between thresholds.
    for j in range(1, len(levels)):
        d_prev, a_prev = levels[j - 1]
        d, a = levels[j]
        if d_prev >= _P56_MARGIN_DB > d:
            frac = (d_prev - _P56_MARGIN_DB) / (d_prev - d)
            return a_prev + frac * (a - a_prev)
    return levels[0][1] if levels[0][0] < _P56_MARGIN_DB else levels[-1][1]


def peak_dbfs(audio: npt.NDArray[np.floating]) -> float:
    """Sample peak relative to full scale 1.0, in dB."""
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def _limit(x: npt.NDArray[np.float64], ceiling: float, rate_hz: int) -> npt.NDArray[np.float64]:
    """Look-ahead peak limiter: per-sample gain = running min over ±W of ceiling/|x|, then smoothed.

    The smoothing window is half the min window, so every smoothed gain at a peak is an average of
    values no larger than that peak needs: the ceiling holds exactly.
    """
    need = np.minimum(1.0, ceiling / np.maximum(np.abs(x), 1e-12))
    if need.min() >= 1.0:
        return x
    half = max(1, int(_LIMITER_WINDOW_S * rate_hz))
    padded = np.pad(need, half, constant_values=1.0)
    runmin = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1).min(axis=1)
    k = half + 1
    kernel = np.ones(k) / k
    smooth = np.convolve(np.pad(runmin, (k // 2, k - 1 - k // 2), mode="edge"), kernel, mode="valid")
    limited: npt.NDArray[np.float64] = x * np.minimum(smooth, need.max())
    return limited


def level_and_limit(
    audio: npt.NDArray[np.floating],
    target_dbov: float = TARGET_LEVEL_DBOV,
    ceiling_dbfs: float = PEAK_CEILING_DBFS,
    rate_hz: int = RATE_HZ,
) -> npt.NDArray[np.float64]:
    """Scale to the target active speech level, then hold peaks under the ceiling.

    Limiting lowers the level a little; a second pass makes that up (never beyond the ceiling).
    """
    x = np.asarray(audio, dtype=np.float64)
    # Aim the ceiling a hair low so int16 rounding cannot cross it.
    ceiling = 10 ** ((ceiling_dbfs - 0.02) / 20)
    for _ in range(2):
        level = active_speech_level(x, rate_hz)
        if not math.isfinite(level):
            return x
        x = _limit(x * 10 ** ((target_dbov - level) / 20), ceiling, rate_hz)
    return x


def fade(audio: npt.NDArray[np.float64], seconds: float = FADE_S) -> npt.NDArray[np.float64]:
    """Raised-cosine fade in and out, so segments joined with silence never click."""
    n = min(round(seconds * RATE_HZ), len(audio) // 2)
    if n == 0:
        return audio
    ramp = np.sin(np.linspace(0.0, np.pi / 2, n)) ** 2
    out = np.array(audio, dtype=np.float64)
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def silence(seconds: float) -> npt.NDArray[np.float64]:
    """Digital silence at 8 kHz."""
    return np.zeros(round(seconds * RATE_HZ))


def to_int16(audio: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    """Float (full scale 1.0) to 16-bit PCM, rounded, clipped."""
    return np.clip(np.round(np.asarray(audio) * _FULL_SCALE), -32768, 32767).astype(np.int16)
