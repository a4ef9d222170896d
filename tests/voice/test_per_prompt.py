"""PerPrompt: what is made from a prompt is found again for that very prompt, within its bound."""

from __future__ import annotations

import numpy as np

from voip_sos.voice.prompt import PerPrompt, Prompt


def prompt(n: int) -> Prompt:
    return Prompt.from_pcm(np.full(160, n, dtype=np.int16), language="en", text=str(n), source="piper")


def test_found_for_the_same_prompt_only_and_bounded() -> None:
    kept: PerPrompt[str] = PerPrompt(2)
    a, b, c = prompt(1), prompt(2), prompt(3)
    assert kept.put(a, "A") == "A" and kept.get(a) == "A"
    assert kept.get(prompt(1)) is None  # an equal prompt is another message object
    kept.put(b, "B")
    kept.put(c, "C")
    assert kept.get(a) is None and kept.get(b) == "B" and kept.get(c) == "C"  # the oldest went
