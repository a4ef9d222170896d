"""In-band DTMF (Goertzel) on tones made by sox: every key once per press, and no keys in speech."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from rtp_audio import dtmf_sequence, dtmf_tone, read_pcm, silence, sox

from voip_sos.rtp import g711
from voip_sos.rtp.inband import InbandDtmfDetector

ALL_KEYS = "123A456B789C*0#D"


def detect(pcm: npt.NDArray[np.int16], chunk: int = 160) -> str:
    d = InbandDtmfDetector()
    found = []
    for i in range(0, pcm.size, chunk):
        found += d.feed(pcm[i : i + chunk], i / 8000)
    assert all(k.source == "inband" for k in found)
    return "".join(k.digit for k in found)


def test_every_key_once(tmp_path: Path) -> None:
    pcm = dtmf_sequence(tmp_path, ALL_KEYS, tone_s=0.06, gap_s=0.06)
    assert detect(pcm) == ALL_KEYS


@pytest.mark.parametrize("codec", g711.CODECS)
def test_keys_survive_g711_and_any_chunking(tmp_path: Path, codec: g711.Codec) -> None:
    pcm = dtmf_sequence(tmp_path, "19#0", tone_s=0.05, gap_s=0.05)
    heard = g711.decode(codec, g711.encode(codec, pcm))
    assert detect(heard) == "19#0"
    assert detect(heard, chunk=37) == "19#0"
    assert detect(heard, chunk=1000) == "19#0"


def test_long_press_is_one_event_and_same_key_twice_is_two(tmp_path: Path) -> None:
    assert detect(dtmf_sequence(tmp_path, "5", tone_s=2.0, gap_s=0.1)) == "5"
    assert detect(dtmf_sequence(tmp_path, "55", tone_s=0.1, gap_s=0.05)) == "55"


@pytest.mark.parametrize("lead_ms", [0, 3, 7, 11])  # alignment of the tones to the analysis blocks
def test_duration_limits(tmp_path: Path, lead_ms: int) -> None:
    # ITU-T Q.24: 40 ms tones with 40 ms pauses must be detected; 20 ms bursts must not.
    lead = read_pcm(silence(tmp_path / "lead.wav", lead_ms / 1000)) if lead_ms else np.zeros(0, np.int16)
    long_enough = dtmf_sequence(tmp_path, "1234", tone_s=0.04, gap_s=0.04)
    assert detect(np.concatenate([lead, long_enough])) == "1234"
    too_short = dtmf_sequence(tmp_path, "1234", tone_s=0.02, gap_s=0.04)
    assert detect(np.concatenate([lead, too_short])) == ""


def test_short_dropout_does_not_split_a_press(tmp_path: Path) -> None:
    # A 10 ms hole (a lost packet concealed by silence) inside a long tone is still one press.
    tone = read_pcm(dtmf_tone(tmp_path / "t.wav", "6", 0.3)).copy()
    tone[1200:1280] = 0
    assert detect(tone) == "6"


@pytest.mark.parametrize(
    ("row_db", "col_db", "expected"),
    [
        (-10, -16, "8"),  # 6 dB normal twist: accepted
        (-10, -22, ""),  # 12 dB normal twist: rejected
        (-13, -10, "8"),  # 3 dB reverse twist: accepted
        (-18, -10, ""),  # 8 dB reverse twist: rejected
        (-28, -28, "8"),  # quiet but valid
        (-45, -45, ""),  # below the level threshold
    ],
)
def test_twist_and_level(tmp_path: Path, row_db: float, col_db: float, expected: str) -> None:
    pcm = dtmf_sequence(tmp_path, "8", tone_s=0.08, gap_s=0.05, row_db=row_db, col_db=col_db)
    assert detect(pcm) == expected


def test_keys_in_noise(tmp_path: Path) -> None:
    keys = dtmf_sequence(tmp_path, "2580", tone_s=0.06, gap_s=0.06)
    noise = tmp_path / "noise.wav"
    sox(
        "-n",
        "-r",
        "8000",
        "-b",
        "16",
        "-c",
        "1",
        noise,
        "synth",
        f"{keys.size / 8000}",
        "pinknoise",
        "vol",
        "-32dB",
    )
    mixed = keys.astype(np.int32) + read_pcm(noise)[: keys.size]
    assert detect(np.clip(mixed, -32768, 32767).astype(np.int16)) == "2580"


@pytest.mark.parametrize("kind", ["whitenoise", "pinknoise", "brownnoise"])
def test_no_keys_in_noise(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "n.wav"
    sox("-n", "-r", "8000", "-b", "16", "-c", "1", out, "synth", "10", kind, "vol", "0.5")
    assert detect(read_pcm(out)) == ""


def test_no_keys_in_music_like_tones(tmp_path: Path) -> None:
    # Chords of plucked strings and a sweep pass through DTMF frequencies without being keys.
    chord = tmp_path / "chord.wav"
    sox(
        "-n",
        "-r",
        "8000",
        "-b",
        "16",
        "-c",
        "1",
        chord,
        "synth",
        "3",
        "pluck",
        "C4",
        "pluck",
        "E4",
        "pluck",
        "G4",
        "remix",
        "-",
        "vol",
        "-6dB",
    )
    sweep = tmp_path / "sweep.wav"
    sox("-n", "-r", "8000", "-b", "16", "-c", "1", sweep, "synth", "5", "sine", "600-1700", "vol", "-10dB")
    assert detect(read_pcm(chord)) == ""
    assert detect(read_pcm(sweep)) == ""


SENTENCES = {
    "en": "This is an automated emergency call. The subscriber at building nine, unit three, floor two, "
    "room five needs help. Press one to confirm, press nine to hear this message again.",
    "de": "Dies ist ein automatischer Notruf. Bitte drücken Sie eins, um zu bestätigen.",
    "zh": "这是一个自动紧急呼叫。用户住在九号楼三单元二层五号。请按一确认，按九重听。",
    "fr": "Ceci est un appel d'urgence automatique. Appuyez sur un pour confirmer.",
}


@pytest.mark.parametrize("voice", ["en", "en+f3", "zh", "de", "fr"])
def test_no_keys_in_speech(tmp_path: Path, voice: str) -> None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is not installed (scripts/setup.sh installs it)")
    wav = tmp_path / "speech.wav"
    text = SENTENCES[voice.split("+")[0]]
    subprocess.run([espeak, "-v", voice, "-w", str(wav), text], check=True, timeout=60, capture_output=True)
    narrow = tmp_path / "speech8k.wav"
    sox(wav, "-r", "8000", "-b", "16", "-c", "1", narrow, "gain", "-n", "-3")
    pcm = read_pcm(narrow)
    assert pcm.size > 8000 * 3
    assert detect(pcm) == ""
    # And keys pressed while the prompt is still playing are heard over it.
    key = read_pcm(dtmf_tone(tmp_path / "k.wav", "9", 0.08))
    gap = read_pcm(silence(tmp_path / "s.wav", 0.5))
    quiet_speech = (pcm[: 8000 * 2].astype(np.int32) // 10).astype(np.int16)  # ~20 dB below the key
    over = np.concatenate([gap, key, gap]).astype(np.int32)
    over[: quiet_speech.size] += quiet_speech[: over.size]
    assert detect(np.clip(over, -32768, 32767).astype(np.int16)) == "9"


def test_no_keys_in_the_piper_voice() -> None:
    # The real prompt voice (Piper en_US-joe-medium, rendered once and stored as 8 kHz A-law) reading
    # a full emergency message, digits and "star, pound" included.
    path = Path(__file__).resolve().parent.parent / "fixtures" / "rtp" / "piper-joe-emergency-8k-alaw.wav"
    pcm = read_pcm(path)
    assert pcm.size > 8000 * 15
    assert detect(pcm) == ""
    assert detect(g711.decode("PCMU", g711.encode("PCMU", pcm))) == ""
