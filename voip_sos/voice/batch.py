"""Renders outside the service: one message in this process (`prompts say`), many in a pool (`render`).

Both read the cache first and load a voice only on a miss, so a cached message is served without
importing Piper at all.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voip_sos.directory.records import Subscriber
from voip_sos.voice import normalize as nz
from voip_sos.voice.catalog import Catalog
from voip_sos.voice.models import VoiceSpec
from voip_sos.voice.prompt import LEAD_IN_S, TAIL_S, Prompt, assemble
from voip_sos.voice.render import RenderJob, RenderResult, engine_for, render_pcm, run_job, worker_init

__all__ = ["BatchSummary", "LocalRenderer", "render_batch"]

logger = logging.getLogger(__name__)

# What one message takes in the cache, for the "is there room" check before rendering it.
APPROX_MESSAGE_BYTES = 200_000


class LocalRenderer:
    """Renders in the calling process (CLI): cache hit -> no model; miss -> load the voice once."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.rendered = 0

    def segment(self, text: str, spec: VoiceSpec, key: str) -> npt.NDArray[np.int16]:
        pcm = self.catalog.cache.get(key)
        if pcm is None:
            pcm = render_pcm(engine_for(spec, self.catalog.settings), text)
            self.catalog.cache.put(key, pcm)
            self.rendered += 1
        return pcm

    def message(self, subscriber: Subscriber, language: str) -> Prompt:
        """The full message exactly as a call plays it."""
        seg = self.catalog.segments(subscriber, language)
        if seg.spec.is_fallback:
            from voip_sos.voice.service import FALLBACK_WARNING_ZH

            logger.warning(FALLBACK_WARNING_ZH, extra={"uid": subscriber.uid})
        opening, body, closing = (self.segment(text, seg.spec, key) for text, key in seg.parts())
        prompt = assemble(
            opening, body, closing, language=language, text=seg.text.full(), source=seg.spec.engine
        )
        for warning in prompt.warnings:
            logger.warning(warning, extra={"uid": subscriber.uid})
        return prompt

    def text(self, text: str, language: str) -> Prompt:
        """Arbitrary text through the same normalisation, voice and pipeline, with lead-in and tail."""
        spoken = (nz.en_text if language == "en" else nz.zh_text)(text)
        spec = self.catalog.voices[language]
        pcm = self.segment(spoken, spec, self.catalog.key(spoken, language))
        rate = 8000
        full = np.concatenate(
            [np.zeros(round(LEAD_IN_S * rate), np.int16), pcm, np.zeros(round(TAIL_S * rate), np.int16)]
        )
        return Prompt.from_pcm(full, language=language, text=spoken, source=spec.engine, body_start=0)


@dataclass(slots=True)
class BatchSummary:
    """Counts of messages (one per subscriber and language)."""

    rendered: int = 0
    cached: int = 0
    failed: int = 0
    skipped_cache_full: int = 0
    segments_rendered: int = 0
    synth_s: float = 0.0
    audio_s: float = 0.0
    wall_s: float = 0.0


def render_batch(
    catalog: Catalog,
    subscribers: Sequence[Subscriber],
    *,
    jobs: int = 1,
    force: bool = False,
    nice: int = 0,
    progress: Callable[[int], None] | None = None,
    pool: Executor | None = None,
) -> BatchSummary:
    """Render every message of `subscribers` into the cache with `jobs` worker processes.

    Stops submitting when the cache reaches `voice.cache_max_mb` (the rest are rendered at SOS time).
    `progress(n)` is called with the number of messages finished since the last call. A caller may
    pass its own (warm) `pool`; otherwise one with `jobs` spawned workers is made and shut down.
    """
    started = time.perf_counter()
    summary = BatchSummary()
    cache = catalog.cache
    cache.scan()
    # Unique segments to render, and which messages need each.
    todo: dict[str, RenderJob] = {}
    messages: list[set[str]] = []
    for sub in subscribers:
        for language in catalog.languages_for(sub):
            seg = catalog.segments(sub, language)
            need = {key for text, key in seg.parts() if force or not cache.contains(key)}
            if not need:
                summary.cached += 1
                if progress:
                    progress(1)
                continue
            if not cache.has_room(APPROX_MESSAGE_BYTES * (len(messages) + 1)):
                summary.skipped_cache_full += 1
                continue
            for text, key in seg.parts():
                if key in need and key not in todo:
                    todo[key] = RenderJob(
                        text, seg.spec, catalog.settings, key, str(cache.root), return_pcm=False
                    )
            messages.append(need)
    if summary.skipped_cache_full:
        logger.warning(
            "prompt cache full (voice.cache_max_mb); the rest are rendered at SOS time",
            extra={"skipped": summary.skipped_cache_full},
        )
    failed_keys: set[str] = set()
    waiting: dict[str, list[int]] = {}
    for i, need in enumerate(messages):
        for key in need:
            waiting.setdefault(key, []).append(i)
    remaining = [len(need) for need in messages]
    if todo:
        own = pool is None
        if pool is None:
            ctx = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(
                jobs,
                mp_context=ctx,
                initializer=worker_init,
                initargs=(nice, (), catalog.settings, os.getpid()),
            )
        try:
            futures: dict[Future[RenderResult], str] = {
                pool.submit(run_job, job): key for key, job in todo.items()
            }
            for fut in as_completed(futures):
                key = futures[fut]
                try:
                    result = fut.result()
                    cache.note(key, result.size)
                    summary.segments_rendered += 1
                    summary.synth_s += result.synth_s
                    summary.audio_s += result.audio_s
                except Exception as exc:
                    failed_keys.add(key)
                    logger.error("render failed", extra={"key": key, "error": repr(exc)})
                done = 0
                for i in waiting[key]:
                    remaining[i] -= 1
                    if remaining[i] == 0:
                        done += 1
                        if messages[i] & failed_keys:
                            summary.failed += 1
                        else:
                            summary.rendered += 1
                if progress and done:
                    progress(done)
        finally:
            if own:
                pool.shutdown(wait=True, cancel_futures=True)
    summary.wall_s = time.perf_counter() - started
    return summary
