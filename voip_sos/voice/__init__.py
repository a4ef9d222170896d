"""Voice: the spoken emergency message, rendered offline with Piper (espeak-ng fallback for Mandarin).

Public API (imported lazily so `config check` and a cache hit never import Piper or numpy needlessly):
`PromptService` (SOS-time `begin`/`ensure`, background `prerender`), `Prompt` (PCM + G.711
payloads), `PendingPrompt`, `MessageText`, `load_template`, `message_text`, `check_models`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "MessageText",
    "PendingPrompt",
    "Prompt",
    "PromptService",
    "check_models",
    "load_template",
    "message_text",
]

_WHERE = {
    "MessageText": "templates",
    "load_template": "templates",
    "message_text": "templates",
    "PendingPrompt": "service",
    "PromptService": "service",
    "Prompt": "prompt",
    "check_models": "models",
}

if TYPE_CHECKING:
    from voip_sos.voice.models import check_models
    from voip_sos.voice.prompt import Prompt
    from voip_sos.voice.service import PendingPrompt, PromptService
    from voip_sos.voice.templates import MessageText, load_template, message_text


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"voip_sos.voice.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'voip_sos.voice' has no attribute {name!r}")
