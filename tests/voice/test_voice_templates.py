"""Templates: defaults per language, empty parts left out cleanly, operator files, bad templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.voice.conftest import subscriber
from voip_sos.errors import ConfigError
from voip_sos.voice.templates import load_template, message_text


def test_default_english_message() -> None:
    sub = subscriber(building="3", unit="2", floor="5", room="502")
    assert message_text(sub, load_template("en")).full() == (
        "This is an automated emergency call from the one key SOS service. "
        "Wang Li, subscriber number one zero zero two three, needs help at twelve Harbour Street, "
        "building three, unit two, floor five, room five zero two. "
        "Press one to confirm you have this message. Press nine to hear it again."
    )


def test_english_empty_parts_left_out_cleanly() -> None:
    sub = subscriber(uid="", floor="5")
    text = message_text(sub, load_template("en"))
    assert text.body == "Wang Li needs help at twelve Harbour Street, floor five."


def test_default_chinese_message() -> None:
    sub = subscriber(
        name="王丽",
        language="zh",
        line="北京市朝阳区建国路88号",
        building="3",
        unit="2",
        floor="5",
        room="502",
    )
    assert message_text(sub, load_template("zh")).full() == (
        "这是一键求助服务自动拨打的紧急电话。"
        "王丽，用户号码幺零零二三，需要紧急救助。住址，北京市朝阳区建国路八十八号，三栋，二单元，五楼，五零二室。"
        "确认收到请按一。再听一遍请按九。"
    )


def test_chinese_empty_parts_left_out_cleanly() -> None:
    sub = subscriber(uid="", name="王丽", language="zh", line="建国路88号", room="502")
    assert message_text(sub, load_template("zh")).body == "王丽需要紧急救助。住址，建国路八十八号，五零二室。"


def test_chinese_name_in_english_message_is_respelled_pinyin() -> None:
    sub = subscriber(name="王丽", line="建国路88号", unit="2单元")
    body = message_text(sub, load_template("en")).body
    assert body.startswith("Wahng Lee, subscriber number")
    assert "Jee yen Gwaw Loo eighty eight" in body
    assert "unit two." in body
    assert not any("\u4e00" <= c <= "\u9fff" for c in body)


def test_operator_template_file_overrides(tmp_path: Path) -> None:
    (tmp_path / "en.yaml").write_text(
        'opening: "Automated call."\n'
        'body: "{name}[ in room {room}] needs an ambulance."\n'
        'closing: "Press 1."\n',
        encoding="utf-8",
    )
    t = load_template("en", str(tmp_path))
    assert message_text(subscriber(room="502"), t).full() == (
        "Automated call. Wang Li in room five zero two needs an ambulance. Press one."
    )
    assert message_text(subscriber(), t).body == "Wang Li needs an ambulance."
    # No zh.yaml there: the shipped one is used.
    assert load_template("zh", str(tmp_path)).source.endswith("(shipped)")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('opening: "x"\nbody: "{nmae}"\nclosing: "y"\n', "unknown placeholder {nmae}"),
        ('opening: "Hi {name}"\nbody: "{name}"\nclosing: "y"\n', "must be fixed text"),
        ('opening: "x"\nbody: "[a [b]]"\nclosing: "y"\n', "unbalanced or nested"),
        ('opening: "x"\nbody: "y"\n', "needs text keys opening, body, closing"),
    ],
)
def test_bad_templates_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "en.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_template("en", str(tmp_path))
    assert message in str(exc.value)
    assert "en.yaml" in str(exc.value)
