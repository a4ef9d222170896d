"""In-band DTMF: keys found as tone pairs in the received 8 kHz audio (many gateways send no events).

A Goertzel filter per DTMF frequency over blocks of 102 samples (12.75 ms, the block length Asterisk
uses; long enough to separate neighbouring rows), the blocks overlapping by half (a new block every
51 samples) so that timing is judged at 6.4 ms resolution. Each block is evaluated as a single-bin
DFT at the exact frequency, which gives the same power as the Goertzel recurrence but runs as one
numpy matrix product for all eight frequencies and all pending blocks.

A block holds a key when all of these hold (the checks every DTMF receiver makes, Q.24 figures):
- level: each of the two tones at least MIN_TONE_DBFS;
- twist: the row tone at most NORMAL_TWIST_DB above the column tone, at most REVERSE_TWIST_DB below;
- relative peak: the strongest row (column) bin RELATIVE_PEAK_DB above the other rows (columns);
- energy: the two tones carry at least TONE_TO_TOTAL of the block's energy (speech does not);
- steadiness: the weaker half of the block has at least MIN_HALF_RATIO of the stronger half's
  energy, i.e. the tone fills at least ~65 % of the block (a block grazed by a burst does not count).
A key is reported when HITS_TO_REPORT consecutive blocks hold it (their span is 255 samples, of which
the two end blocks must be 65 % filled): tones of 40 ms are always found whatever their alignment,
bursts shorter than 23 ms never are (ITU-T Q.24: 40 ms accepted, 20 ms rejected). Once per press:
the next report of the same key needs MIN_GAP_BLOCKS blocks in a row without it (a 40 ms pause
gives at least six, a 10 ms drop-out in a long tone at most four).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voip_sos.rtp.events import DtmfReceived
from voip_sos.rtp.g711 import CLOCK_RATE_HZ, PcmArray

__all__ = ["BLOCK_SAMPLES", "InbandDtmfDetector"]

BLOCK_SAMPLES = 102
HOP_SAMPLES = 51
ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COL_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")
MIN_TONE_DBFS = -36.0  # per tone, sine peak re full scale (about -33 dBm0 in G.711)
NORMAL_TWIST_DB = 8.0
REVERSE_TWIST_DB = 4.0
RELATIVE_PEAK_DB = 6.0
TONE_TO_TOTAL = 0.7
MIN_HALF_RATIO = 0.3
HITS_TO_REPORT = 4
MIN_GAP_BLOCKS = 5

_n = np.arange(BLOCK_SAMPLES)
_freqs = np.array(ROW_HZ + COL_HZ)
_phase = 2 * np.pi * np.outer(_n, _freqs) / CLOCK_RATE_HZ
_BASIS = np.hstack([np.cos(_phase), np.sin(_phase)])  # (102, 16): real and imaginary parts
# A sine of peak A at a bin's exact frequency gives power (A * N / 2) ** 2.
_MIN_POWER = (10 ** (MIN_TONE_DBFS / 20) * 32768 * BLOCK_SAMPLES / 2) ** 2
_NORMAL_TWIST = 10 ** (NORMAL_TWIST_DB / 10)
_REVERSE_TWIST = 10 ** (REVERSE_TWIST_DB / 10)
_RELATIVE_PEAK = 10 ** (RELATIVE_PEAK_DB / 10)


def _key_of(power: npt.NDArray[np.float64], energy: float, halves: tuple[float, float]) -> str | None:
    """The key one block holds, from its eight bin powers and its energy (whole, halves); None if none."""
    if min(halves) < MIN_HALF_RATIO * max(halves):
        return None
    rows, cols = power[:4], power[4:]
    r, c = int(rows.argmax()), int(cols.argmax())
    rp, cp = float(rows[r]), float(cols[c])
    if rp < _MIN_POWER or cp < _MIN_POWER:
        return None
    if rp > cp * _NORMAL_TWIST or cp > rp * _REVERSE_TWIST:
        return None
    if np.any(np.delete(rows, r) * _RELATIVE_PEAK > rp) or np.any(np.delete(cols, c) * _RELATIVE_PEAK > cp):
        return None
    if rp + cp < TONE_TO_TOTAL * energy:
        return None
    return KEYS[r][c]


def _block_keys(blocks: npt.NDArray[np.float64]) -> list[str | None]:
    """The key each block holds; blocks has shape (k, BLOCK_SAMPLES)."""
    proj = blocks @ _BASIS
    power = proj[:, :8] ** 2 + proj[:, 8:] ** 2
    # Parseval: a block's total energy expressed in the same units as one bin's power.
    squares = blocks * blocks
    first = squares[:, : BLOCK_SAMPLES // 2].sum(axis=1)
    second = squares[:, BLOCK_SAMPLES // 2 :].sum(axis=1)
    total = (first + second) * BLOCK_SAMPLES / 2
    return [
        _key_of(p, float(e), (float(a), float(b)))
        for p, e, a, b in zip(power, total, first, second, strict=True)
    ]


class InbandDtmfDetector:
    """Feed received audio in any chunk size; get one DtmfReceived per key press."""

    __slots__ = ("_buffer", "_candidate", "_hits", "_misses", "_reported")

    def __init__(self) -> None:
        self._buffer: npt.NDArray[np.float64] = np.zeros(0)
        self._candidate: str | None = None
        self._hits = 0
        self._reported: str | None = None
        self._misses = 0

    def feed(self, pcm: PcmArray, now: float) -> list[DtmfReceived]:
        """Analyse `pcm` (appended to what came before); returns the presses recognised in it."""
        buf = (
            np.concatenate([self._buffer, pcm.astype(np.float64)])
            if self._buffer.size
            else pcm.astype(np.float64)
        )
        if buf.size < BLOCK_SAMPLES:
            self._buffer = buf
            return []
        blocks = np.lib.stride_tricks.sliding_window_view(buf, BLOCK_SAMPLES)[::HOP_SAMPLES]
        self._buffer = buf[blocks.shape[0] * HOP_SAMPLES :]
        events: list[DtmfReceived] = []
        for key in _block_keys(blocks):
            digit = self._step(key)
            if digit is not None:
                events.append(DtmfReceived(digit=digit, source="inband", at=now))
        return events

    def _step(self, key: str | None) -> str | None:
        if key is None:
            self._candidate, self._hits = None, 0
            self._misses += 1
            if self._misses >= MIN_GAP_BLOCKS:
                self._reported = None
            return None
        self._misses = 0
        self._hits = self._hits + 1 if key == self._candidate else 1
        self._candidate = key
        if self._hits >= HITS_TO_REPORT and key != self._reported:
            self._reported = key
            return key
        return None
