"""Render the generic messages played when a personal message cannot be rendered (run once, commit).

    .venv/bin/python audio/render_generic.py

Writes generic-LANG.wav (8 kHz 16-bit, the same pipeline and layout as every message) and the raw
G.711 payloads generic-LANG.alaw / .ulaw (for SIPp's rtp_stream and for checking by ear). Mandarin
uses the espeak-ng fallback voice unless voice.models.zh is configured.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from voip_sos.config import load_config
from voip_sos.voice.cache import encode_wav
from voip_sos.voice.engines import SynthesisSettings
from voip_sos.voice.models import resolve_voice
from voip_sos.voice.prompt import LEAD_IN_S, PART_PAUSE_S, TAIL_S, Prompt
from voip_sos.voice.render import engine_for, render_pcm

HERE = Path(__file__).resolve().parent

TEXTS = {
    "en": (
        "This is an automated emergency call from the one key SOS service.",
        "A subscriber needs help, but their details cannot be spoken.",
        "The name and address are in the emergency text message sent to this number.",
        "Press one to confirm you have this message.",
    ),
    "zh": (
        "这是一键求助服务自动拨打的紧急电话。",
        "有用户需要紧急救助，无法播报详细信息。",
        "姓名和住址请查看发送到本号码的紧急短信。",
        "确认收到请按一。",
    ),
}


def main() -> int:
    cfg = load_config()
    settings = SynthesisSettings(length_scale=cfg.voice.length_scale)
    for language, sentences in TEXTS.items():
        engine = engine_for(resolve_voice(language, cfg.voice.models), settings)
        gap = np.zeros(round(PART_PAUSE_S * 8000), dtype=np.int16)
        parts = [np.zeros(round(LEAD_IN_S * 8000), dtype=np.int16)]
        for sentence in sentences:
            parts += [render_pcm(engine, sentence), gap]
        parts.append(np.zeros(round(TAIL_S * 8000), dtype=np.int16))
        text = ("" if language == "zh" else " ").join(sentences)
        prompt = Prompt.from_pcm(np.concatenate(parts), language=language, text=text, source="fallback")
        (HERE / f"generic-{language}.wav").write_bytes(encode_wav(prompt.pcm))
        (HERE / f"generic-{language}.alaw").write_bytes(prompt.alaw)
        (HERE / f"generic-{language}.ulaw").write_bytes(prompt.ulaw)
        (HERE / f"generic-{language}.txt").write_text(text + "\n", encoding="utf-8")
        print(f"generic-{language}: {prompt.duration_s:.1f} s: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
