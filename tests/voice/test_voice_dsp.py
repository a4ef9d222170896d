"""The audio pipeline's parts: G.711 tables, P.56 speech level, leveling with a peak ceiling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voip_sos.rtp import g711
from voip_sos.voice import dsp


def test_g711_known_codes() -> None:
    pcm = np.array([0, 32767, -32768], dtype=np.int16)
    assert g711.ulaw_encode(pcm) == bytes([0xFF, 0x80, 0x00])
    assert g711.alaw_encode(pcm) == bytes([0xD5, 0xAA, 0x2A])
    assert g711.ulaw_decode(bytes([0xFF, 0x80, 0x00])).tolist() == [0, 32124, -32124]
    assert g711.alaw_decode(bytes([0xD5, 0xAA, 0x2A])).tolist() == [8, 32256, -32256]


@pytest.mark.parametrize(
    ("enc", "dec"), [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)]
)
def test_g711_roundtrip_within_one_step(enc, dec) -> None:  # type: ignore[no-untyped-def]
    x = np.arange(-32768, 32768, dtype=np.int16)
    y = dec(enc(x)).astype(np.int64)
    err = np.abs(y - x.astype(np.int64))
    # G.711 segments: the quantisation step is at most 1/16 of the magnitude (plus the first segment).
    assert np.all(err <= np.maximum(np.abs(x.astype(np.int64)) / 16 + 1, 32))
    # Decoding is monotonic in the code's magnitude, and every code round-trips through decode+encode
    # (except μ-law's negative zero 0x7F, which encodes back as 0xFF).
    codes = bytes(range(256))
    again = enc(dec(codes))
    assert sum(a != b for a, b in zip(again, codes, strict=True)) <= 1


def test_p56_level_of_a_full_scale_sine_is_minus_3_dbov() -> None:
    t = np.arange(8000 * 2) / 8000
    sine = np.sin(2 * np.pi * 1000 * t)
    assert dsp.active_speech_level(sine) == pytest.approx(-3.0, abs=0.2)


def test_p56_ignores_pauses() -> None:
    t = np.arange(8000) / 8000
    burst = 0.1 * np.sin(2 * np.pi * 440 * t)
    with_pause = np.concatenate([burst, np.zeros(8000 * 3), burst])
    # Three seconds of silence change the long-term RMS by 8 dB but the active level hardly at all.
    assert dsp.active_speech_level(with_pause) == pytest.approx(dsp.active_speech_level(burst), abs=0.7)
    assert dsp.active_speech_level(np.zeros(800)) == -math.inf


def test_level_and_limit_hits_target_and_ceiling() -> None:
    rng = np.random.default_rng(1)
    # Speech-like: bursts of noise with a high crest factor, and pauses.
    x = np.concatenate([rng.laplace(0, 0.05, 4000) * (i % 2) for i in range(8)])
    y = dsp.level_and_limit(x)
    assert dsp.active_speech_level(y) == pytest.approx(dsp.TARGET_LEVEL_DBOV, abs=1.0)
    assert dsp.peak_dbfs(dsp.to_int16(y) / 32768) <= dsp.PEAK_CEILING_DBFS


def test_telephone_band_cuts_low_frequencies() -> None:
    t = np.arange(8000) / 8000
    low = np.sin(2 * np.pi * 60 * t).astype(np.float32)
    mid = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    assert np.sqrt(np.mean(dsp.telephone_band(low) ** 2)) < 0.01
    assert np.sqrt(np.mean(dsp.telephone_band(mid) ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.05)
