"""Message templates: operator-editable files per language, filled with a subscriber's normalised values.

A template has three parts: a fixed `opening` ("This is an automated emergency call ..."), the
personal `body` (who and where) and a fixed `closing` (press 1 / press 9). They are rendered and
cached separately so the fixed parts are ready before any SOS and only the body is personal.

Syntax: `{placeholder}`; `[ ... ]` is dropped when any placeholder inside it is empty, so a record
without a room number does not say "room" (the issue's "parts that are empty are left out cleanly").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from voip_sos.directory.records import ADDRESS_PARTS, Subscriber
from voip_sos.errors import ConfigError
from voip_sos.voice import normalize as nz
from voip_sos.voice.romanize import respell_han

__all__ = ["LANGUAGES", "PLACEHOLDERS", "MessageText", "Template", "load_template", "message_text"]

LANGUAGES = ("en", "zh")
PLACEHOLDERS = ("name", "uid", "address", *ADDRESS_PARTS)
_PART_NAMES = ("opening", "body", "closing")
_GROUP_RE = re.compile(r"\[([^\[\]]*)\]")
_FIELD_RE = re.compile(r"\{([a-z_]*)\}")


@dataclass(frozen=True, slots=True)
class MessageText:
    """The exact words spoken, after normalisation, in the three parts that are rendered apart."""

    language: str
    """`en` or `zh`."""
    opening: str
    """Fixed first sentence, the same for every subscriber of this language."""
    body: str
    """Who needs help and where."""
    closing: str
    """Fixed instructions (press 1, press 9)."""

    def full(self) -> str:
        """The whole message as one text, as `prompts text` prints it."""
        sep = "" if self.language == "zh" else " "
        return sep.join(p for p in (self.opening, self.body, self.closing) if p)


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template for one language; `source` names the file for error messages."""

    language: str
    opening: str
    body: str
    closing: str
    source: str
    confirmed: str = ""
    """Said once after the callee pressed 1, before we hang up (fixed text)."""

    def fill(self, values: dict[str, str]) -> MessageText:
        """Substitute already-normalised values; plain text in the template is normalised too."""
        plain = plain_normaliser(self.language)

        def sub_fields(text: str) -> str:
            out: list[str] = []
            pos = 0
            for m in _FIELD_RE.finditer(text):
                out.append(plain(text[pos : m.start()]))
                out.append(values.get(m.group(1), ""))
                pos = m.end()
            out.append(plain(text[pos:]))
            return "".join(out)

        def group(m: re.Match[str]) -> str:
            inner = m.group(1)
            if any(not values.get(name, "") for name in _FIELD_RE.findall(inner)):
                return ""
            return sub_fields(inner)

        pieces: list[str] = []
        pos = 0
        for m in _GROUP_RE.finditer(self.body):
            pieces += [sub_fields(self.body[pos : m.start()]), group(m)]
            pos = m.end()
        body = "".join([*pieces, sub_fields(self.body[pos:])])
        return MessageText(
            language=self.language,
            opening=_tidy(plain(self.opening), self.language),
            body=_tidy(body, self.language),
            closing=_tidy(plain(self.closing), self.language),
        )


def _tidy(text: str, language: str) -> str:
    """Collapse what dropped parts leave behind: doubled commas, spaces before punctuation."""
    text = re.sub(r"\s+", " ", text).strip()
    if language == "zh":
        text = text.replace(" ", "")
        text = re.sub(r"[，、]+(?=[。，])", "", text)
        text = re.sub(r"([：])[，]+", r"\1", text)
        return text.strip("，")
    text = re.sub(r"\s+([,.?!])", r"\1", text)
    text = re.sub(r",(\s*,)+", ",", text)
    text = re.sub(r",\s*([.?!])", r"\1", text)
    return text.strip(" ,")


def plain_normaliser(language: str) -> Callable[[str], str]:
    # Template prose: numbers and symbols as words, keeping the operator's punctuation and spacing.
    return nz.en_plain if language == "en" else nz.zh_plain


def _romanise(text: str) -> str:
    """Han characters in an English message are read as respelled pinyin (王丽 -> Wahng Lee)."""
    return respell_han(text)


def subscriber_values(subscriber: Subscriber, language: str) -> dict[str, str]:
    """Every placeholder's spoken value for this subscriber in this language ("" when unknown)."""
    a = subscriber.address
    if language == "en":
        values = {
            "name": nz.en_name(_romanise(subscriber.name)),
            "uid": nz.en_digits(subscriber.uid),
            "address": nz.en_text(_romanise(re.sub(r"(?<=\d)号", "", a.line))),
        }
        for part in ADDRESS_PARTS:
            values[part] = nz.en_part(part, _romanise(nz.zh_strip_suffix(part, getattr(a, part))))
    else:
        values = {
            "name": nz.zh_name(subscriber.name),
            "uid": nz.zh_digits(subscriber.uid),
            "address": nz.zh_text(a.line),
        }
        for part in ADDRESS_PARTS:
            values[part] = nz.zh_part(part, getattr(a, part))
    # A value's own final full stop would end the sentence in the middle of the address.
    return {k: v.strip(" ,，.。") for k, v in values.items()}


def _check(text: str, where: str, *, fixed: bool) -> None:
    for name in _FIELD_RE.findall(text):
        if name not in PLACEHOLDERS:
            raise ConfigError([f"config error: voice template {where}: unknown placeholder {{{name}}}"])
        if fixed:
            raise ConfigError([f"config error: voice template {where}: must be fixed text, found {{{name}}}"])
    if text.count("[") != text.count("]") or re.search(r"\[[^\]]*\[", text):
        raise ConfigError([f"config error: voice template {where}: unbalanced or nested [ ]"])


# What a template without a `confirmed` key says after the callee pressed 1.
_CONFIRMED_DEFAULT = {"en": "Confirmed. Thank you. Goodbye.", "zh": "已确认，谢谢。再见。"}


def parse_template(language: str, text: str, source: str) -> Template:
    """Parse and validate a template file's text; raises ConfigError naming the file and part."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"config error: voice template {source}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict) or any(not isinstance(data.get(p), str) for p in _PART_NAMES):
        raise ConfigError([f"config error: voice template {source}: needs text keys opening, body, closing"])
    parts = {p: unicodedata.normalize("NFC", data[p]).strip() for p in _PART_NAMES}
    for p in _PART_NAMES:
        _check(parts[p], f"{source} {p}", fixed=p != "body")
    confirmed = data.get("confirmed", _CONFIRMED_DEFAULT.get(language, ""))
    if not isinstance(confirmed, str):
        raise ConfigError([f"config error: voice template {source}: confirmed must be text"])
    confirmed = unicodedata.normalize("NFC", confirmed).strip()
    _check(confirmed, f"{source} confirmed", fixed=True)
    return Template(language, parts["opening"], parts["body"], parts["closing"], source, confirmed)


def load_template(language: str, templates_dir: str | None = None) -> Template:
    """The operator's template from `templates_dir/<lang>.yaml` if present, else the shipped one."""
    if language not in LANGUAGES:
        raise ConfigError([f"config error: voice: no template for language {language!r}"])
    if templates_dir:
        path = Path(templates_dir) / f"{language}.yaml"
        if path.is_file():
            return parse_template(language, path.read_text(encoding="utf-8"), str(path))
    shipped = resources.files("voip_sos.voice").joinpath("templates", f"{language}.yaml")
    return parse_template(language, shipped.read_text(encoding="utf-8"), f"{language}.yaml (shipped)")


def message_text(subscriber: Subscriber, template: Template) -> MessageText:
    """The normalised message for one subscriber (what `prompts text` prints)."""
    return template.fill(subscriber_values(subscriber, template.language))
