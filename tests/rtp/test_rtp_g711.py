"""G.711 against sox and libsndfile: every one of the 65,536 PCM values, every one of the 256 codes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from rtp_audio import read_pcm, sox

from voip_sos.rtp import g711

SOX_NAME = {"PCMA": "a-law", "PCMU": "u-law"}
SF_NAME = {"PCMA": "ALAW", "PCMU": "ULAW"}
ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)


@pytest.mark.parametrize("codec", g711.CODECS)
def test_encode_every_value_bit_exact_with_sox(tmp_path: Path, codec: g711.Codec) -> None:
    src = tmp_path / "all.wav"
    sf.write(str(src), ALL_PCM, 8000, subtype="PCM_16")
    out = tmp_path / "out.raw"
    # -D: no dither (sox dithers by default when it lowers precision; that is noise, not G.711).
    sox("-D", src, "-t", "raw", "-e", SOX_NAME[codec], out)
    assert g711.encode(codec, ALL_PCM) == out.read_bytes()


@pytest.mark.parametrize("codec", g711.CODECS)
def test_decode_every_code_matches_sox_and_soundfile(tmp_path: Path, codec: g711.Codec) -> None:
    codes = bytes(range(256))
    raw = tmp_path / "codes.raw"
    raw.write_bytes(codes)
    out = tmp_path / "dec.wav"
    sox(
        "-t",
        "raw",
        "-r",
        "8000",
        "-c",
        "1",
        "-b",
        "8",
        "-e",
        SOX_NAME[codec],
        raw,
        "-b",
        "16",
        "-e",
        "signed",
        out,
    )
    ours = g711.decode(codec, codes)
    assert ours.dtype == np.int16
    assert np.array_equal(ours, read_pcm(out))
    with sf.SoundFile(str(raw), samplerate=8000, channels=1, format="RAW", subtype=SF_NAME[codec]) as f:
        assert np.array_equal(ours, f.read(dtype="int16"))


@pytest.mark.parametrize("codec", g711.CODECS)
def test_speech_encodes_like_sox(tmp_path: Path, codec: g711.Codec) -> None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is not installed (scripts/setup.sh installs it)")
    wav = tmp_path / "speech.wav"
    subprocess.run(
        [espeak, "-w", str(wav), "Automated emergency call for building three"], check=True, timeout=60
    )
    narrow = tmp_path / "speech8k.wav"
    sox(wav, "-r", "8000", "-b", "16", "-c", "1", narrow)
    out = tmp_path / "speech.raw"
    sox("-D", narrow, "-t", "raw", "-e", SOX_NAME[codec], out)
    pcm = read_pcm(narrow)
    assert g711.encode(codec, pcm) == out.read_bytes()
    # Little-endian PCM bytes are accepted as well as arrays.
    assert g711.encode(codec, pcm.astype("<i2").tobytes()) == out.read_bytes()


@pytest.mark.parametrize("codec", g711.CODECS)
def test_decode_then_encode_is_identity_and_silence_byte(codec: g711.Codec) -> None:
    codes = bytes(range(256))
    again = g711.encode(codec, g711.decode(codec, codes))
    # Every code survives except μ-law's negative zero (0x7F), which decodes to 0 = positive zero 0xFF.
    expected = codes if codec == "PCMA" else codes.replace(b"\x7f", b"\xff")
    assert again == expected
    assert g711.encode(codec, np.zeros(1, np.int16)) == bytes([g711.SILENCE_BYTE[codec]])


def test_rejects_non_int16_arrays() -> None:
    with pytest.raises(TypeError):
        g711.encode("PCMA", np.zeros(4, dtype=np.float32))  # type: ignore[arg-type]
