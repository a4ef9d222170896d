"""Emergency SMS texts and segment counting."""

from __future__ import annotations

from voip_sos.directory.records import Address, Contact, Stb, Subscriber
from voip_sos.notify.sms import SmsFacts, codes_text, emergency_text, false_alarm_text, sms_segments

SUB = Subscriber(
    uid="U1001",
    name="王芳",
    language="zh",
    address=Address("北京市海淀区花园路12号", building="3", unit="2", floor="5", room="502"),
    contacts=(Contact("儿子", "+8613800000001"),),
    stbs=(Stb("10.1.0.1"),),
    notes="糖尿病，冰箱里有胰岛素",
)
URL = "https://sos.example.net/v/Xc1_8zQmR0aVbC2dE3fG4h"


def test_english_emergency_text_carries_who_where_codes_and_link() -> None:
    text = emergency_text(
        SUB, SmsFacts("en", voice_url=URL, door_code="482913", parking_code="P7731", for_centre=True)
    )
    assert text.splitlines() == [
        "SOS one-key emergency: 王芳 (subscriber U1001) needs help.",
        "Address: 北京市海淀区花园路12号, building 3, unit 2, floor 5, room 502",
        "Door code 482913.",
        "Parking code P7731.",
        "Medical notes: 糖尿病，冰箱里有胰岛素",
        f"Voice message: {URL}",
    ]


def test_chinese_text_for_family_has_no_medical_notes_and_spoken_units() -> None:
    text = emergency_text(SUB, SmsFacts("zh", voice_url=URL))
    assert "地址：北京市海淀区花园路12号3栋2单元5层502室" in text
    assert "病史" not in text and URL in text


def test_test_texts_are_marked() -> None:
    assert emergency_text(SUB, SmsFacts("en", test=True)).startswith("[TEST] SOS")
    assert codes_text(SUB, SmsFacts("zh", test=True, door_code="1")).startswith("【测试】")
    assert false_alarm_text(SUB, SmsFacts("en", test=True)).startswith(
        "[TEST] SOS: subscriber reports a false alarm"
    )


def test_false_alarm_and_codes_texts() -> None:
    assert false_alarm_text(SUB, SmsFacts("en")) == (
        "SOS: subscriber reports a false alarm. 王芳 (subscriber U1001), "
        "北京市海淀区花园路12号, building 3, unit 2, floor 5, room 502."
    )
    assert codes_text(SUB, SmsFacts("en", door_code="482913")).endswith(": Door code 482913.")


def test_segments() -> None:
    assert sms_segments("a" * 160) == ("gsm7", 1)
    assert sms_segments("a" * 161) == ("gsm7", 2)
    assert sms_segments("{" * 80) == ("gsm7", 1)  # extension characters take two septets
    assert sms_segments("{" * 81) == ("gsm7", 2)
    assert sms_segments("好" * 70) == ("ucs2", 1)
    assert sms_segments("好" * 71) == ("ucs2", 2)
    assert sms_segments("😀" * 35) == ("ucs2", 1)  # a surrogate pair is two UCS-2 units
