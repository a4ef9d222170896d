"""Text normalisation: turn directory values into words a TTS voice reads the way a call taker expects.

Rules (each has a test in tests/voice/test_voice_normalize.py):
- identifiers (uid) are read one digit at a time ("10023" -> "one zero zero two three"; in Chinese
  幺零零二三, 幺 for 1 as Chinese telephony reads digits so 1 and 7 are not confused);
- house, building, unit and floor numbers are read as numbers ("12" -> "twelve", 88号 -> 八十八号);
  room numbers and any number of five or more digits are read digit by digit (502 -> "five zero two",
  五零二室), as people say them;
- address abbreviations are expanded (St. Rd. Ave. Apt. Bldg. ... ; 3# -> 三号, 3-2-502 ->
  三栋二单元五零二室);
- nothing is left that a voice would spell oddly: symbols become words or pauses, and Chinese text
  holds no Latin letters or Arabic digits (letters get their usual Chinese names).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "en_cardinal",
    "en_digits",
    "en_name",
    "en_part",
    "en_plain",
    "en_text",
    "zh_cardinal",
    "zh_digits",
    "zh_name",
    "zh_part",
    "zh_plain",
    "zh_strip_suffix",
    "zh_text",
]

# ---------------------------------------------------------------------------------------------
# English

_EN_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_EN_TEENS = (
    "ten", "eleven", "twelve", "thirteen", "fourteen",
    "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)  # fmt: skip
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

# Longest spoken cardinal: above this a number is an identifier (postcode, phone) and is read digit by
# digit, which is also how a call taker writes it down.
MAX_CARDINAL = 9999

# Expanded wherever they appear in an address (case-insensitive, optional trailing dot).
_EN_ADDRESS_ABBREVIATIONS = {
    "st": "Street",
    "rd": "Road",
    "ave": "Avenue",
    "av": "Avenue",
    "blvd": "Boulevard",
    "ln": "Lane",
    "dr": "Drive",
    "ct": "Court",
    "pl": "Place",
    "sq": "Square",
    "hwy": "Highway",
    "pkwy": "Parkway",
    "apt": "Apartment",
    "bldg": "Building",
    "blk": "Block",
    "fl": "Floor",
    "flr": "Floor",
    "rm": "Room",
    "ste": "Suite",
    "dist": "District",
}
_EN_NAME_TITLES = {"mr": "Mister", "mrs": "Missus", "ms": "Miz", "dr": "Doctor", "prof": "Professor"}
_EN_SYMBOLS = {"&": " and ", "#": " number ", "+": " plus ", "@": " at ", "%": " percent "}


def en_digits(text: str) -> str:
    """Read an identifier one character at a time: digits as words, letters by name."""
    words: list[str] = []
    for ch in unicodedata.normalize("NFKC", text):
        if ch.isascii() and ch.isdigit():
            words.append(_EN_DIGITS[int(ch)])
        elif ch.isascii() and ch.isalpha():
            words.append(ch.upper())
        elif words and words[-1] != ",":
            # A separator in an identifier ("SOS-10023") is a short pause, not a word.
            words.append(",")
    while words and words[-1] == ",":
        words.pop()
    return " ".join(words).replace(" ,", ",")


def en_cardinal(n: int) -> str:
    """0..9999 as English words ("one thousand two hundred five"); larger numbers digit by digit."""
    if n < 0 or n > MAX_CARDINAL:
        return en_digits(str(n))
    if n < 10:
        return _EN_DIGITS[n]
    if n < 20:
        return _EN_TEENS[n - 10]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _EN_TENS[tens] + (f" {_EN_DIGITS[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_EN_DIGITS[hundreds]} hundred" + (f" {en_cardinal(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{_EN_DIGITS[thousands]} thousand" + (f" {en_cardinal(rest)}" if rest else "")


def _en_number(m: re.Match[str]) -> str:
    digits = m.group(0)
    # Leading zeros ("007") and long numbers are codes, not quantities.
    if (len(digits) > 1 and digits.startswith("0")) or int(digits) > MAX_CARDINAL:
        return f" {en_digits(digits)} "
    return f" {en_cardinal(int(digits))} "


def _en_expand(text: str, table: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        return table[m.group(1).lower()]

    pattern = r"\b(" + "|".join(sorted(table, key=len, reverse=True)) + r")\b\.?"
    return re.sub(pattern, repl, text, flags=re.IGNORECASE)


def _en_clean(text: str, *, strip: bool = True) -> str:
    text = unicodedata.normalize("NFKC", text)
    for sym, word in _EN_SYMBOLS.items():
        text = text.replace(sym, word)
    # Number ranges "12-14" are read "twelve to fourteen"; other dashes and slashes are pauses.
    text = re.sub(r"(?<=\d)\s*[-\u2013]\s*(?=\d)", " to ", text)
    text = re.sub(r"[/\\|_\u2013\u2014-]+", " ", text)
    # "12B" -> "12 B" so the number and the letter are read separately.
    text = re.sub(r"(?<=\d)(?=[A-Za-z])|(?<=[A-Za-z])(?=\d)", " ", text)
    text = re.sub(r"\d+", _en_number, text)
    # Anything else a voice would read out ("*", "~", quotes, brackets) is dropped.
    text = re.sub(r"[^\w\s,.'?!]", " ", text)
    text = re.sub(r"\s+([,.])", r"\1", text)
    text = re.sub(r"[,.]{2,}", ",", text)
    text = re.sub(r"\s+", " ", text)
    return text.strip(" ,") if strip else text


def en_plain(text: str) -> str:
    """Template prose in English: numbers and symbols as words; spacing and punctuation kept."""
    return _en_clean(text, strip=False)


_EN_COMPASS = {"NE": "North East", "NW": "North West", "SE": "South East", "SW": "South West"}


def _en_compass(text: str) -> str:
    """Upper-case compass suffixes ("Ave NW") are said as words, not letters."""
    return re.sub(r"\b(NE|NW|SE|SW)\b", lambda m: _EN_COMPASS[m.group(1)], text)


def _en_number_sign(text: str) -> str:
    """'No. 5' / 'No 5' is "number five"; a plain "No" stays a word."""
    return re.sub(r"\bNo\.?\s*(?=\d)", "Number ", text, flags=re.IGNORECASE)


def en_saint(text: str) -> str:
    """'St' before a name is Saint, after one it is Street.

    Saint when it opens the line or a comma-separated part, or follows a house number
    ("1205 St. Mary's Rd."); otherwise ("12 Harbour St.") the abbreviation list makes it Street.
    """
    return re.sub(r"(^|,\s*|\d\s+)St\.?\s+(?=[A-Z][a-z])(?!Street\b)", r"\1Saint ", text)


def en_text(text: str) -> str:
    """A free-text address line in English, ready to speak."""
    text = _en_compass(_en_number_sign(en_saint(text)))
    return _en_clean(_en_expand(text, _EN_ADDRESS_ABBREVIATIONS))


_EN_PART_PREFIX = {
    "building": r"(building|bldg|block|blk)",
    "unit": r"(unit|apartment|apt|suite|ste)",
    "floor": r"(floor|flr|fl)",
    "room": r"(room|rm|no|number)",
}


def en_part(part: str, value: str) -> str:
    """A structured address part (building, unit, floor, room, number, street ...) in English.

    The template already says "building", "floor" ...: a value that repeats the word ("Bldg 3") is
    stripped of it. Room numbers are read digit by digit ("502" -> "five zero two").
    """
    value = value.strip()
    prefix = _EN_PART_PREFIX.get(part)
    if prefix:
        value = re.sub(rf"^{prefix}\b\.?\s*", "", value, flags=re.IGNORECASE)
    if part == "room" and re.fullmatch(r"\d{3,}", value):
        return en_digits(value)
    return en_text(value)


def en_name(text: str) -> str:
    """A person's name in English: titles expanded, symbols dropped."""
    return _en_clean(_en_expand(text, _EN_NAME_TITLES))


# ---------------------------------------------------------------------------------------------
# Chinese

_ZH_DIGITS = "零一二三四五六七八九"
# Telephony reading: 幺 for 1 (一 and 七 are easily confused on a line).
_ZH_PHONE_DIGITS = "零幺二三四五六七八九"
# The usual Chinese names of Latin letters, so no Latin letter reaches the voice.
_ZH_LETTERS = {
    "A": "诶", "B": "比", "C": "西", "D": "迪", "E": "伊", "F": "艾弗", "G": "吉",
    "H": "艾尺", "I": "艾", "J": "杰", "K": "开", "L": "艾勒", "M": "艾马", "N": "艾娜",
    "O": "欧", "P": "屁", "Q": "丘", "R": "艾儿", "S": "艾丝", "T": "提", "U": "优",
    "V": "维", "W": "达布溜", "X": "艾克斯", "Y": "歪", "Z": "贼德",
}  # fmt: skip
_ZH_SYMBOLS = {"#": "号", "&": "和", "+": "加", "@": "艾特", "%": "百分之"}
# Suffixes after which a number is a count-like number read as a number (八十八号, 三栋, 五楼).
_ZH_CARDINAL_SUFFIX = r"(号楼|号院|号|栋|幢|座|单元|楼|层|街|巷|弄|里|村|组|期|区)"
# Suffixes after which a number is a room number, read digit by digit (五零二室).
_ZH_DIGIT_SUFFIX = r"(室|房|户)"


def zh_digits(text: str) -> str:
    """Read an identifier one character at a time: 幺 for 1, letters by their Chinese names."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKC", text):
        if ch.isascii() and ch.isdigit():
            out.append(_ZH_PHONE_DIGITS[int(ch)])
        elif ch.isascii() and ch.isalpha():
            out.append(_ZH_LETTERS[ch.upper()])
        elif out and out[-1] != "，":
            out.append("，")
    while out and out[-1] == "，":
        out.pop()
    return "".join(out)


def zh_cardinal(n: int) -> str:
    """0..9999 as Chinese numerals (十二, 一百零五, 两千 is avoided: 二千 reads as written); else digits."""
    if n < 0 or n > MAX_CARDINAL:
        return zh_digits(str(n))
    if n < 10:
        return _ZH_DIGITS[n]
    if n < 20:
        return "十" + (_ZH_DIGITS[n - 10] if n > 10 else "")
    out = ""
    zero = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d, n = divmod(n, value)
        if d:
            if zero:
                out += "零"
            out += _ZH_DIGITS[d] + unit
            zero = False
        elif out:
            zero = True
    return out


def _zh_number(digits: str, *, by_digit: bool) -> str:
    if by_digit or (len(digits) > 1 and digits.startswith("0")) or int(digits) > MAX_CARDINAL:
        return zh_digits(digits)
    return zh_cardinal(int(digits))


def _zh_clean(text: str, *, strip: bool = True) -> str:
    text = unicodedata.normalize("NFKC", text)
    # Shorthand "3-2-502" (building-unit-room) as Chinese addresses often write it.
    text = re.sub(
        r"(?<!\d)(\d{1,3})-(\d{1,2})-(\d{3,4})(?!\d)",
        lambda m: f"{m.group(1)}栋{m.group(2)}单元{m.group(3)}室",
        text,
    )
    for sym, word in _ZH_SYMBOLS.items():
        text = text.replace(sym, word)
    text = re.sub(r"(?<=\d)\s*-\s*(?=\d)", "至", text)
    text = re.sub(rf"(\d+)(?=\s*{_ZH_DIGIT_SUFFIX})", lambda m: _zh_number(m.group(1), by_digit=True), text)
    text = re.sub(
        rf"(\d+)(?=\s*{_ZH_CARDINAL_SUFFIX})", lambda m: _zh_number(m.group(1), by_digit=False), text
    )
    # Remaining numbers: short ones are numbers, long ones (postcodes, codes) digit by digit.
    text = re.sub(r"\d+", lambda m: _zh_number(m.group(0), by_digit=len(m.group(0)) > 4), text)
    text = re.sub(r"[A-Za-z]", lambda m: _ZH_LETTERS[m.group(0).upper()], text)
    # ASCII punctuation becomes Chinese pauses; other symbols are dropped.
    text = re.sub(r"[,;:/\\|\-\u2013\u2014]+", "，", text)
    text = re.sub(r"[.!?]+", "。", text)
    text = re.sub(r"[^\w，。、？！：]", "", text)
    text = re.sub(r"[，、]{2,}", "，", text)
    return text.strip("，") if strip else text


def zh_plain(text: str) -> str:
    """Template prose in Chinese: digits, letters and symbols as words; punctuation kept."""
    return _zh_clean(text, strip=False)


def zh_text(text: str) -> str:
    """A free-text address line in Chinese, ready to speak: digits, letters and symbols as words."""
    return _zh_clean(text)


_ZH_PART_SUFFIX = {
    "building": ("栋", r"(栋|幢|座|号楼|楼)$"),
    "unit": ("单元", r"(单元)$"),
    "floor": ("楼", r"(楼|层)$"),
    "room": ("室", r"(室|房|户)$"),
    "number": ("号", r"(号|号院)$"),
}


def zh_part(part: str, value: str) -> str:
    """A structured address part in Chinese with its spoken suffix (三栋, 二单元, 五楼, 五零二室).

    A value that already carries its word ("3栋", "5号楼") keeps it; a bare number gets the usual one.
    """
    value = unicodedata.normalize("NFKC", value).strip()
    spec = _ZH_PART_SUFFIX.get(part)
    if spec and value and not re.search(spec[1], value):
        value += spec[0]
    return _zh_clean(value)


def zh_strip_suffix(part: str, value: str) -> str:
    """A structured part without its Chinese word ("2单元" -> "2"), for the English template."""
    spec = _ZH_PART_SUFFIX.get(part)
    return re.sub(spec[1], "", value.strip()) if spec else value


def zh_name(text: str) -> str:
    """A person's name in Chinese text: letters by their Chinese names, symbols dropped."""
    return _zh_clean(text)
