"""What to say and with which voice: templates, voices and settings from the configuration.

Shared by the service (SOS time, pre-rendering) and the CLI/batch renders, so both compute the same
texts and the same cache keys.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from voip_sos.config import Config
from voip_sos.directory.records import Address, Subscriber
from voip_sos.errors import ConfigError
from voip_sos.voice.cache import PromptCache, segment_key
from voip_sos.voice.engines import SynthesisSettings
from voip_sos.voice.models import VoiceSpec, check_models, resolve_voice
from voip_sos.voice.templates import LANGUAGES, MessageText, Template, load_template, message_text

TEXT_CACHE = 4096  # message texts kept (least recently used dropped first)

__all__ = ["Catalog", "Segments", "message_languages"]

# Filled and normalised (~0.8 ms) several times per incident (calls, texts, link): kept for the
# subscribers seen lately. A changed record is another key (records and templates are immutable).
_message_text = functools.lru_cache(maxsize=TEXT_CACHE)(message_text)

# A record with every part empty: its message holds just the template's fixed opening and closing.
_PROBE = Subscriber(uid="", name="", language="en", address=Address(line=""), contacts=(), stbs=())


def message_languages(subscriber: Subscriber, centre_language: str) -> tuple[str, ...]:
    """The centre hears `emergency.language`; the family the subscriber's own (both if they differ)."""
    own = subscriber.language if subscriber.language in LANGUAGES else centre_language
    return (centre_language,) if own == centre_language else (centre_language, own)


@dataclass(frozen=True, slots=True)
class Segments:
    """The three parts of one message (opening, body, closing) with their cache keys."""

    text: MessageText
    spec: VoiceSpec
    keys: tuple[str, str, str]

    def parts(self) -> tuple[tuple[str, str], tuple[str, str], tuple[str, str]]:
        """(text, key) of opening, body, closing."""
        t = self.text
        return ((t.opening, self.keys[0]), (t.body, self.keys[1]), (t.closing, self.keys[2]))


class Catalog:
    """Templates, voices, synthesis settings and the cache, as configured."""

    def __init__(self, cfg: Config, settings: SynthesisSettings | None = None) -> None:
        v = cfg.voice
        problems = check_models(v.models)
        if problems:
            raise ConfigError(problems)
        self.cfg = cfg
        self.settings = settings or SynthesisSettings(length_scale=v.length_scale)
        self.cache = PromptCache(v.cache_dir, v.cache_max_mb * 1024 * 1024)
        self.templates: dict[str, Template] = {
            lang: load_template(lang, v.templates_dir or None) for lang in LANGUAGES
        }
        self.voices: dict[str, VoiceSpec] = {lang: resolve_voice(lang, v.models) for lang in LANGUAGES}

    def languages_for(self, subscriber: Subscriber) -> tuple[str, ...]:
        return message_languages(subscriber, self.cfg.emergency.language)

    def key(self, text: str, language: str) -> str:
        return segment_key(text, self.voices[language], self.settings.as_dict())

    def segments(self, subscriber: Subscriber, language: str) -> Segments:
        text = _message_text(subscriber, self.templates[language])
        keys = (
            self.key(text.opening, language),
            self.key(text.body, language),
            self.key(text.closing, language),
        )
        return Segments(text, self.voices[language], keys)

    def fixed(self, language: str) -> Segments:
        """The fixed parts of a language's message (the body of this probe is empty)."""
        return self.segments(_PROBE, language)
