"""G.711 μ-law and A-law for 16-bit PCM, as numpy lookup tables (ITU-T G.711, Sun g711.c reference).

Private to voice until rtp/g711.py is on main; the lead dedupes (both implement the same tables).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

_ULAW_BIAS = 0x84
_ULAW_BIAS_14 = 0x21
_ULAW_CLIP_14 = 8159


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit, as G.711 μ-law works on
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), _ULAW_CLIP_14) + _ULAW_BIAS_14
    exp = np.floor(np.log2(mag)).astype(np.int32) - 5
    mant = (mag >> (exp + 1)) & 0x0F
    code = np.where(mag > 0x1FFF, 0x7F, (np.minimum(exp, 7) << 4) | mant)  # overload: top code
    return (~(sign | code) & 0xFF).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exp = (u >> 4) & 0x07
    mant = u & 0x0F
    mag = (((mant << 3) + _ULAW_BIAS) << exp) - _ULAW_BIAS
    return np.where(u & 0x80, -mag, mag).astype(np.int16)


_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit, as G.711 A-law works on
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_SEG_AEND, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENC = _build_ulaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_ENC = _build_alaw_encode()
_ALAW_DEC = _build_alaw_decode()


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """16-bit PCM samples -> μ-law payload bytes (one byte per sample)."""
    return bytes(_ULAW_ENC[pcm.astype(np.int32) + 32768])


def alaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """16-bit PCM samples -> A-law payload bytes (one byte per sample)."""
    return bytes(_ALAW_ENC[pcm.astype(np.int32) + 32768])


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """μ-law bytes -> 16-bit PCM samples."""
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """A-law bytes -> 16-bit PCM samples."""
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]
