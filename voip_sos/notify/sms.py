"""Emergency texts: what each SMS says, what it costs in segments, and the transport behind them.

The transport is one small interface (`SmsTransport`): SIP MESSAGE through the PBX today, a direct
SMPP link to the operator's SMS centre later, without touching the incident logic. Texts are sent
whole; the network splits a long one into concatenated segments (see `sms_segments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from voip_sos.directory.records import Subscriber

__all__ = [
    "SmsFacts",
    "SmsResult",
    "SmsTransport",
    "codes_text",
    "emergency_text",
    "false_alarm_text",
    "sms_segments",
]

# GSM 03.38 default alphabet (basic set) and the extension characters that take two septets.
_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(frozen=True, slots=True)
class SmsResult:
    """The transport's final answer. A SIP 202 means accepted by the PBX, not delivered."""

    status: int | None
    accepted: bool
    delivered: bool | None = None


class SmsTransport(Protocol):
    async def send(self, number: str, text: str) -> SmsResult:
        """Send `text` whole to `number`; return the final status."""
        ...


def sms_segments(text: str) -> tuple[str, int]:
    """(encoding, segments) a network needs for `text`: GSM-7 160/153 or UCS-2 70/67 per segment."""
    septets = 0
    for ch in text:
        if ch in _GSM7_BASIC:
            septets += 1
        elif ch in _GSM7_EXTENDED:
            septets += 2
        else:
            units = len(text.encode("utf-16-be")) // 2
            return "ucs2", 1 if units <= 70 else -(-units // 67)
    return "gsm7", 1 if septets <= 160 else -(-septets // 153)


@dataclass(frozen=True, slots=True)
class SmsFacts:
    """What an emergency text says beyond the subscriber's record."""

    language: str
    test: bool = False
    voice_url: str | None = None
    door_code: str | None = None
    parking_code: str | None = None
    for_centre: bool = False
    family_url: str | None = None


def _codes(facts: SmsFacts, zh: bool) -> list[str]:
    out = []
    if facts.door_code:
        out.append(f"门锁临时密码 {facts.door_code}" if zh else f"Door code {facts.door_code}")
    if facts.parking_code:
        out.append(f"停车通行码 {facts.parking_code}" if zh else f"Parking code {facts.parking_code}")
    return out


def _address(sub: Subscriber, zh: bool) -> str:
    a = sub.address
    if not zh:
        return a.full()
    parts = [a.line]
    for value, unit in ((a.building, "栋"), (a.unit, "单元"), (a.floor, "层"), (a.room, "室")):
        if value:
            parts.append(f"{value}{unit}")
    return "".join(parts)


def emergency_text(sub: Subscriber, facts: SmsFacts) -> str:
    """The first SMS: SOS, uid, name, full address, codes when known, link to the voice message."""
    zh = facts.language == "zh"
    tag = ("【测试】" if zh else "[TEST] ") if facts.test else ""
    if zh:
        lines = [
            f"{tag}一键SOS紧急求助：{sub.name}（用户号 {sub.uid}）需要帮助。",
            f"地址：{_address(sub, True)}",
        ]
    else:
        lines = [f"{tag}SOS one-key emergency: {sub.name} (subscriber {sub.uid}) needs help.",
                 f"Address: {_address(sub, False)}"]  # fmt: skip
    lines += [c + ("。" if zh else ".") for c in _codes(facts, zh)]
    if facts.for_centre and sub.notes:
        lines.append(f"病史：{sub.notes}" if zh else f"Medical notes: {sub.notes}")
    if facts.voice_url:
        lines.append(f"语音：{facts.voice_url}" if zh else f"Voice message: {facts.voice_url}")
    if facts.family_url:
        lines.append(
            f"进度与门锁：{facts.family_url}" if zh else f"Status and door codes: {facts.family_url}"
        )
    return "\n".join(lines)


def codes_text(sub: Subscriber, facts: SmsFacts) -> str:
    """The follow-up once the door code and/or parking code are known."""
    zh = facts.language == "zh"
    tag = ("【测试】" if zh else "[TEST] ") if facts.test else ""
    codes = "；".join(_codes(facts, True)) if zh else "; ".join(_codes(facts, False))
    if zh:
        return f"{tag}一键SOS {sub.name}（{sub.uid}），{_address(sub, True)}：{codes}。"
    return f"{tag}SOS {sub.name} ({sub.uid}), {_address(sub, False)}: {codes}."


def false_alarm_text(sub: Subscriber, facts: SmsFacts) -> str:
    """Everyone already told learns that the subscriber reports a false alarm."""
    zh = facts.language == "zh"
    tag = ("【测试】" if zh else "[TEST] ") if facts.test else ""
    if zh:
        return f"{tag}一键SOS：用户报告误报。{sub.name}（用户号 {sub.uid}），{_address(sub, True)}。"
    return (
        f"{tag}SOS: subscriber reports a false alarm. {sub.name} (subscriber {sub.uid}), "
        f"{_address(sub, False)}."
    )
