"""Normalisation rules: each rule of voip_sos/voice/normalize.py has a test here (en and zh)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from voip_sos.voice import normalize as nz

# --- English -----------------------------------------------------------------------------------


def test_en_ids_are_read_digit_by_digit() -> None:
    assert nz.en_digits("10023") == "one zero zero two three"


def test_en_id_letters_by_name_and_separator_is_a_pause() -> None:
    assert nz.en_digits("SOS-10023") == "S O S, one zero zero two three"


def test_en_house_numbers_are_numbers() -> None:
    assert nz.en_text("12 Harbour Street") == "twelve Harbour Street"
    assert nz.en_text("1205 Oak Road") == "one thousand two hundred five Oak Road"


def test_en_long_numbers_and_leading_zeros_are_codes() -> None:
    assert nz.en_text("Postcode 100020") == "Postcode one zero zero zero two zero"
    assert nz.en_text("Gate 007") == "Gate zero zero seven"


def test_en_room_numbers_digit_by_digit() -> None:
    assert nz.en_part("room", "502") == "five zero two"
    assert nz.en_part("room", "Rm 1101") == "one one zero one"


def test_en_small_parts_are_numbers_and_repeated_word_is_stripped() -> None:
    assert nz.en_part("building", "Bldg 3") == "three"
    assert nz.en_part("floor", "12") == "twelve"
    assert nz.en_part("unit", "Apt. 4B") == "four B"


def test_en_abbreviations_expanded() -> None:
    assert nz.en_text("12 Harbour St.") == "twelve Harbour Street"
    assert nz.en_text("3 Mill Rd") == "three Mill Road"
    assert nz.en_text("Apt. 4, Bldg 7") == "Apartment four, Building seven"
    assert nz.en_text("Oak Ave NW") == "Oak Avenue North West"


def test_en_saint_versus_street() -> None:
    assert nz.en_text("St. Mary's Rd.") == "Saint Mary's Road"
    assert nz.en_text("5 Queen St") == "five Queen Street"


def test_en_number_sign() -> None:
    assert nz.en_text("No. 5 Elm Lane") == "Number five Elm Lane"
    assert nz.en_text("No thanks") == "No thanks"


def test_en_symbols_become_words_or_go() -> None:
    assert nz.en_text("Smith & Co #5") == "Smith and Co number five"
    assert nz.en_text("12-14 High St") == "twelve to fourteen High Street"
    assert nz.en_text('Flat "3" (rear) *') == "Flat three rear"


def test_en_name_titles() -> None:
    assert nz.en_name("Dr. Wang Li") == "Doctor Wang Li"


@given(st.integers(min_value=0, max_value=nz.MAX_CARDINAL))
def test_en_cardinal_only_words(n: int) -> None:
    words = nz.en_cardinal(n)
    assert re.fullmatch(r"[a-z ]+", words)


# --- Chinese -----------------------------------------------------------------------------------


def test_zh_ids_digit_by_digit_with_yao_for_one() -> None:
    assert nz.zh_digits("10023") == "幺零零二三"
    assert nz.zh_digits("1111") == "幺幺幺幺"


def test_zh_house_numbers_are_numbers() -> None:
    assert nz.zh_text("建国路88号") == "建国路八十八号"
    assert nz.zh_text("朝阳路100号院") == "朝阳路一百号院"


def test_zh_cardinals() -> None:
    assert [nz.zh_cardinal(n) for n in (0, 10, 15, 20, 105, 110, 1010, 9999)] == [
        "零", "十", "十五", "二十", "一百零五", "一百一十", "一千零一十", "九千九百九十九",
    ]  # fmt: skip


def test_zh_building_unit_floor_room_words() -> None:
    assert nz.zh_part("building", "3") == "三栋"
    assert nz.zh_part("building", "5号楼") == "五号楼"
    assert nz.zh_part("unit", "2") == "二单元"
    assert nz.zh_part("floor", "15") == "十五楼"
    assert nz.zh_part("room", "502") == "五零二室"
    assert nz.zh_part("room", "1101室") == "幺幺零幺室"


def test_zh_shorthand_building_unit_room() -> None:
    assert nz.zh_text("3-2-502") == "三栋二单元五零二室"
    assert nz.zh_text("3#楼") == "三号楼"


def test_zh_long_numbers_digit_by_digit() -> None:
    assert nz.zh_text("邮编100020") == "邮编幺零零零二零"


def test_zh_no_latin_letters_or_symbols() -> None:
    out = nz.zh_text("A座12层 (east) & B*")
    assert out == "诶座十二层伊诶艾丝提和比"
    assert not re.search(r"[A-Za-z0-9()&*]", out)


@given(st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), max_size=40))
def test_zh_output_never_has_latin_or_digits(text: str) -> None:
    assert not re.search(r"[A-Za-z0-9]", nz.zh_text(text))
