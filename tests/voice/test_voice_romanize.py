"""Han text in an English message: respelled pinyin that the English Piper voice reads as intended."""

from __future__ import annotations

import re

from pypinyin import lazy_pinyin

from voip_sos.voice.engines import SynthesisSettings
from voip_sos.voice.models import resolve_voice
from voip_sos.voice.render import engine_for
from voip_sos.voice.romanize import respell, respell_han


def test_respelling_examples() -> None:
    assert respell_han("王丽") == " Wahng Lee "
    assert [respell(s) for s in ("qu", "xu", "hui", "jian", "guo", "chao", "shi", "zi")] == [
        "Chee-yu", "Shee-yu", "Hoo-way", "Jee-yen", "Gwaw", "Chow", "Shir", "Zuh",
    ]  # fmt: skip
    assert respell_han("no han here") == "no han here"


def test_no_syllable_is_read_as_letter_names() -> None:
    syllables = sorted(
        {
            s
            for c in range(0x4E00, 0xA000)
            if re.fullmatch(r"[a-z]{2,}", s := lazy_pinyin(chr(c))[0]) and s not in ("hm", "hng", "ng")
        }
    )
    engine = engine_for(resolve_voice("en", {}), SynthesisSettings())
    spelled = [respell(s) for s in syllables]
    phonemes = engine.phonemes(", ".join(spelled)).split(", ")
    assert len(phonemes) == len(spelled)
    # Letter names that plain pinyin triggers: H (eɪtʃ), S (ɛs), L (ɛl), M, N, and "ai-en" for -ian.
    bad = [
        (s, r, p)
        for s, r, p in zip(syllables, spelled, phonemes, strict=True)
        if re.search(r"eɪtʃ|ˌɛs|^ˈɛ[slmn]|aɪən|kˈeɪw|dʒˈeɪw", p)
    ]
    assert bad == []
