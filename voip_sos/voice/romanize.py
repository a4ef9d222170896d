"""Han characters in an English message: pinyin respelled so an English voice says it roughly right.

Plain pinyin read by an English voice goes wrong in systematic ways (Qu -> "k", Xu -> "zoo", Chao ->
"kay-oh", Jian -> "jai-an"). Each syllable is respelled with English letter patterns the voice reads
predictably (区 -> "Chew", 徐汇 -> "Shoo Hway", 建国 -> "Jen Gwo"); a test phonemizes every syllable and
checks that none is read as letter names.
"""

from __future__ import annotations

import re

__all__ = ["respell", "respell_han"]

_HAN_RE = re.compile(r"[\u3400-\u9fff]+")

_INITIALS = (
    "zh",
    "ch",
    "sh",
    "b",
    "p",
    "m",
    "f",
    "d",
    "t",
    "n",
    "l",
    "g",
    "k",
    "h",
    "j",
    "q",
    "x",
    "r",
    "z",
    "c",
    "s",
    "y",
    "w",
)
_INITIAL_SPELLING = {
    "zh": "j", "ch": "ch", "sh": "sh", "j": "j", "q": "ch", "x": "sh", "r": "r", "z": "z", "c": "ts",
}  # fmt: skip
_FINAL_SPELLING = {
    "a": "ah", "o": "aw", "e": "uh", "ai": "ai", "ei": "ay", "ao": "ow", "ou": "oh", "an": "ahn",
    "en": "un", "ang": "ahng", "eng": "ung", "ong": "oong", "er": "ar",
    "i": "ee", "ia": "yah", "ie": "yeh", "iao": "yow", "iu": "yo", "ian": "yen", "in": "in",
    "iang": "yahng", "ing": "ing", "iong": "yoong",
    "u": "oo", "ua": "wah", "uo": "waw", "uai": "wai", "ui": "way", "uan": "wahn", "un": "wun",
    "uang": "wahng", "v": "yu", "ve": "yweh", "van": "yuen", "vn": "yun",
}  # fmt: skip
# After j, q, x, y the written u is ü.
_U_AS_V = {"u": "v", "ue": "ve", "uan": "van", "un": "vn"}


def respell(syllable: str) -> str:
    """One toneless pinyin syllable (as pypinyin gives it, ü as v) respelled for an English voice."""
    s = syllable.lower().replace("ü", "v")
    initial = next((i for i in _INITIALS if s.startswith(i) and len(s) > len(i)), "")
    final = s[len(initial) :]
    if initial in ("j", "q", "x", "y") and final in _U_AS_V:
        final = _U_AS_V[final]
    if initial == "y":
        # yi, ya, ye, yu ...: the y is the glide of an i/ü final.
        body = {"i": "ee", "in": "in", "ing": "ing", "v": "yu", "ve": "yweh", "van": "yuen", "vn": "yun"}.get(
            final
        )
        return (body or "y" + _FINAL_SPELLING.get(final, final)).capitalize()
    if initial == "w":
        body = {"u": "woo"}.get(final)
        return (body or "w" + _FINAL_SPELLING.get(final, final)).capitalize()
    if final == "i" and initial in ("zh", "ch", "sh", "r"):
        spelled_final = "ir"  # 市 shi, 知 zhi: a retroflex vowel, closest English "shir"
    elif final == "i" and initial in ("z", "c", "s"):
        spelled_final = "uh"  # 四 si, 字 zi
    else:
        spelled_final = _FINAL_SPELLING.get(final, final)
    head = _INITIAL_SPELLING.get(initial, initial)
    if spelled_final.startswith("w") and head not in ("g", "k"):
        # English starts words with gw/kw but "Hw", "Lw", "Jw", "Tsw" come out as letter names.
        spelled_final = "oo-" + spelled_final
    elif spelled_final.startswith("y"):
        # "Jyen", "Tyen" are read "jai-en": say the glide as its own vowel.
        spelled_final = "ee-" + spelled_final
    return (head + spelled_final).capitalize()


def respell_han(text: str) -> str:
    """Replace every run of Han characters by respelled pinyin syllables, one word each."""
    if not _HAN_RE.search(text):
        return text
    from pypinyin import lazy_pinyin

    def run(m: re.Match[str]) -> str:
        return " " + " ".join(respell(s) for s in lazy_pinyin(m.group(0), v_to_u=False)) + " "

    return _HAN_RE.sub(run, text)
