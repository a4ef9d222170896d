"""The prompt service the backend runs: SOS-time `ensure`/`begin`, background pre-rendering, the cache.

How it behaves:
- At start the fixed opening and closing of every language are rendered (or found in the cache) and
  kept in memory, and `sos_jobs` worker processes load the voices, so a cold SOS render pays only
  for the personal part (~0.3 s of CPU).
- `begin(subscriber, language)` returns at once; the caller places the INVITE and meanwhile the body
  renders in a worker. `PendingPrompt.opening` can be played immediately; `await pending.ready()`
  gives the full message, or the generic recorded one if rendering failed or timed out.
- `prerender(subscriber)` queues the subscriber's messages (centre language and the subscriber's own)
  for background workers at nice 19, within `voice.cache_max_mb` (least recently used evicted).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import multiprocessing
import os
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from voip_sos.config import Config
from voip_sos.directory.records import Subscriber
from voip_sos.errors import ConfigError, MediaError
from voip_sos.logs import bind
from voip_sos.voice.batch import APPROX_MESSAGE_BYTES
from voip_sos.voice.cache import write_atomic
from voip_sos.voice.catalog import Catalog, Segments, message_languages
from voip_sos.voice.engines import SynthesisSettings
from voip_sos.voice.models import VoiceSpec
from voip_sos.voice.prompt import PerPrompt, Prompt, assemble, fallback_path, load_fallback, opening_only
from voip_sos.voice.render import (
    BACKGROUND_NICE,
    SOS_RENDER_NICE,
    RenderJob,
    RenderResult,
    run_job,
    worker_init,
    worker_pid,
)
from voip_sos.voice.templates import LANGUAGES, plain_normaliser

__all__ = ["PendingPrompt", "PromptService", "SubscriberSource", "message_languages"]

logger = logging.getLogger(__name__)

FALLBACK_WARNING_ZH = (
    "Mandarin is spoken by the espeak-ng fallback voice (robotic); provision a Piper Mandarin voice "
    "in voice.models.zh (a .onnx with phoneme_type espeak, or a pinyin voice with its g2pW model "
    "unpacked beside it) for a natural one"
)
_PRERENDER_QUEUE_MAX = 100_000
# Messages whose voice-link WAV is known (a path each; the prompt, ~0.5 MB, is kept alive with it).
WAV_PATHS_KEPT = 32
# How long PendingPrompt.personal() waits for a render that missed `render_timeout_s` (a burst of
# SOS renders queues behind each other; a hung voice must still end).
LATE_TIMEOUT_S = 120.0


def _pcm(result: RenderResult) -> npt.NDArray[np.int16]:
    return np.frombuffer(result.pcm, dtype=np.int16)


class SubscriberSource(Protocol):
    """What `sweep` needs from the directory (voip_sos.directory.Directory has it)."""

    async def list(self, limit: int | None = None, offset: int = 0) -> list[Subscriber]: ...


class PendingPrompt:
    """A message being made ready while the call is set up."""

    def __init__(
        self, opening: Prompt, task: asyncio.Task[Prompt], late: Callable[[], Awaitable[Prompt]]
    ) -> None:
        self.opening = opening
        """Playable at once: lead-in and the fixed first sentence (or the generic message)."""
        self._task = task
        self._late = late

    def done(self) -> bool:
        return self._task.done()

    async def ready(self) -> Prompt:
        """The full message within `voice.render_timeout_s`; else the generic message. Never raises."""
        return await asyncio.shield(self._task)

    async def personal(self) -> Prompt | None:
        """The personal message even if it comes after `ready()` gave the generic one (None if it
        cannot be rendered at all): a sender playing the generic message switches at a loop boundary."""
        first = await self.ready()
        if first.source != "fallback":
            return first
        late = await self._late()
        return None if late.source == "fallback" else late


class PromptService:
    """Owns the render pools and the cache; one per backend process."""

    def __init__(self, cfg: Config, *, settings: SynthesisSettings | None = None) -> None:
        self.cfg = cfg
        self.catalog = Catalog(cfg, settings)
        self.settings = self.catalog.settings
        self.cache = self.catalog.cache
        self.voices: dict[str, VoiceSpec] = self.catalog.voices
        self._fixed: dict[tuple[str, str], npt.NDArray[np.int16]] = {}
        self._openings: dict[str, Prompt] = {}
        self._wav_paths: PerPrompt[Path] = PerPrompt(WAV_PATHS_KEPT)
        self._fallbacks: dict[str, Prompt] = {}
        self._urgent: Executor | None = None
        self._background: Executor | None = None
        self._queue: asyncio.Queue[tuple[Subscriber, str]] = asyncio.Queue(_PRERENDER_QUEUE_MAX)
        self._queued: set[tuple[str, str]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._inflight: dict[tuple[str, bool], asyncio.Future[RenderResult]] = {}
        self._full_logged = False

    # ------------------------------------------------------------------------------------------
    # Life cycle

    async def start(self) -> None:
        """Start the pools, load the generic messages, have every fixed part rendered and in memory."""
        loop = asyncio.get_running_loop()
        self._urgent = self._pool(urgent=True)
        self._background = self._pool(urgent=False)
        # Workers start lazily; start the SOS ones now (each loads the voices) so the first SOS
        # after a restart does not pay ~1.5 s of process start and model load.
        urgent = self._urgent
        warming = [asyncio.wrap_future(urgent.submit(worker_pid)) for _ in range(self.cfg.voice.sos_jobs)]
        for lang in LANGUAGES:
            try:
                self._fallbacks[lang] = await asyncio.to_thread(load_fallback, lang, self._fallback_dir(), "")
            except (OSError, ValueError) as exc:
                # Without it a failed render would mean a silent call: refuse to start instead.
                raise ConfigError(
                    [f"config error: voice.fallback_dir: generic message for {lang!r} unusable: {exc}"]
                ) from None
        await asyncio.to_thread(self.cache.scan)
        # Off the loop, once: hashing the model file (cache keys), `espeak-ng --version`, pypinyin's
        # dictionary. Later key computations at SOS time are then microseconds.
        await asyncio.to_thread(self._warm_keys)
        await asyncio.gather(*warming)
        for lang in self.languages():
            await self._load_fixed(lang)
        self._workers = [
            loop.create_task(self._prerender_worker(), name=f"prerender-{i}")
            for i in range(self.cfg.voice.prerender_jobs)
        ]

    def _pool(self, *, urgent: bool) -> ProcessPoolExecutor:
        # spawn, not fork: the service process has threads (asyncio.to_thread, the DB driver).
        ctx = multiprocessing.get_context("spawn")
        if urgent:
            preload = tuple(self.voices[lang] for lang in self.languages())
            return ProcessPoolExecutor(
                self.cfg.voice.sos_jobs,
                mp_context=ctx,
                initializer=worker_init,
                initargs=(SOS_RENDER_NICE, preload, self.settings, os.getpid()),
            )
        return ProcessPoolExecutor(
            self.cfg.voice.prerender_jobs,
            mp_context=ctx,
            initializer=worker_init,
            initargs=(BACKGROUND_NICE, (), self.settings, os.getpid()),
        )

    def _replace_broken(self, pool: Executor, *, urgent: bool) -> None:
        """A worker died (OOM kill, crash): start a fresh pool so later renders still work."""
        if (self._urgent if urgent else self._background) is not pool:
            return
        logger.error("render worker died; restarting the pool", extra={"urgent": urgent})
        pool.shutdown(wait=False, cancel_futures=True)
        if urgent:
            self._urgent = self._pool(urgent=True)
        else:
            self._background = self._pool(urgent=False)

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pool in (self._urgent, self._background):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _warm_keys(self) -> None:
        from voip_sos.voice.romanize import respell_han

        for lang in LANGUAGES:
            self.catalog.fixed(lang)
        respell_han("王")

    def languages(self) -> tuple[str, ...]:
        """Languages rendered up front: the centre's, the default, and any with a configured model."""
        langs = {self.cfg.emergency.language, self.cfg.voice.language, *self.cfg.voice.models}
        return tuple(lang for lang in LANGUAGES if lang in langs)

    def _fallback_dir(self) -> Path:
        return Path(self.cfg.voice.fallback_dir)

    # ------------------------------------------------------------------------------------------
    # Texts and keys

    def segments(self, subscriber: Subscriber, language: str) -> Segments:
        return self.catalog.segments(subscriber, language)

    async def _render(self, text: str, spec: VoiceSpec, key: str, *, urgent: bool) -> RenderResult:
        """Render into the cache in a worker; concurrent requests for the same key share one render."""
        # An SOS render never waits on a background (nice 19) render of the same text.
        running = self._inflight.get((key, urgent))
        if running is not None:
            return await asyncio.shield(running)
        pool = self._urgent if urgent else self._background
        if pool is None:
            raise MediaError("prompt service not started")
        job = RenderJob(text, spec, self.settings, key, str(self.cache.root))
        fut = asyncio.wrap_future(pool.submit(run_job, job))
        mark = (key, urgent)
        self._inflight[mark] = fut

        # The render outlives a waiter that gave up (SOS timeout): it finishes into the cache and a
        # later request for the same text (PendingPrompt.personal()) joins it instead of starting over.
        def finished(f: asyncio.Future[RenderResult]) -> None:
            self._inflight.pop(mark, None)
            if not f.cancelled():
                f.exception()  # retrieved: a render nobody waits for any more must not warn

        fut.add_done_callback(finished)
        try:
            result = await asyncio.shield(fut)
        except BrokenProcessPool:
            self._replace_broken(pool, urgent=urgent)
            raise
        self.cache.note(result.key, result.size)
        if not self.cache.has_room():
            await asyncio.to_thread(self.cache.evict, {k for (_, k) in self._fixed})
        return result

    async def _segment(self, text: str, spec: VoiceSpec, key: str, *, urgent: bool) -> npt.NDArray[np.int16]:
        pcm = await asyncio.to_thread(self.cache.get, key)
        if pcm is not None:
            return pcm
        return _pcm(await self._render(text, spec, key, urgent=urgent))

    async def _load_fixed(self, language: str) -> None:
        seg = self.catalog.fixed(language)
        for part, (text, key) in (("opening", seg.parts()[0]), ("closing", seg.parts()[2])):
            try:
                self._fixed[(part, key)] = await self._segment(text, seg.spec, key, urgent=True)
            except Exception:
                logger.exception("fixed part not rendered", extra={"language": language, "part": part})
        opening = self._fixed.get(("opening", seg.keys[0]))
        if opening is not None:
            self._openings[language] = opening_only(
                opening, language=language, text=seg.text.opening, source=seg.spec.engine
            )

    async def _fixed_part(self, part: str, text: str, spec: VoiceSpec, key: str) -> npt.NDArray[np.int16]:
        pcm = self._fixed.get((part, key))
        if pcm is None:
            pcm = await self._segment(text, spec, key, urgent=True)
            self._fixed[(part, key)] = pcm
        return pcm

    # ------------------------------------------------------------------------------------------
    # SOS time

    def opening(self, language: str) -> Prompt:
        """The fixed opening, ready in memory; the generic message if it could not be rendered."""
        return self._openings.get(language) or self._fallbacks.get(language) or self._fallbacks["en"]

    async def confirmation(self, language: str) -> Prompt:
        """'Confirmed, thank you' in `language`: rendered once, then served from memory and cache."""
        template = self.catalog.templates[language]
        text = plain_normaliser(language)(template.confirmed)
        spec = self.catalog.voices[language]
        pcm = await self._fixed_part("confirmed", text, spec, self.catalog.key(text, language))
        return opening_only(pcm, language=language, text=text, source=spec.engine)

    def fallback(self, language: str) -> Prompt:
        return self._fallbacks.get(language) or self._fallbacks["en"]

    async def ensure(
        self, subscriber: Subscriber, language: str, *, incident: str = "", timeout_s: float | None = None
    ) -> Prompt:
        """The full message for this subscriber in this language: cached, or rendered now.

        Never blocks the loop (file reads in a thread, synthesis in a process); never raises: a
        failed render, or one slower than `timeout_s` (default `voice.render_timeout_s`), gives the
        generic message from audio/ with a warning; a slow render still completes into the cache.
        """
        log = bind(logger, incident=incident, uid=subscriber.uid, language=language)
        try:
            seg = self.segments(subscriber, language)
            async with asyncio.timeout(timeout_s or self.cfg.voice.render_timeout_s):
                opening = await self._fixed_part("opening", seg.text.opening, seg.spec, seg.keys[0])
                body = await self._segment(seg.text.body, seg.spec, seg.keys[1], urgent=True)
                closing = await self._fixed_part("closing", seg.text.closing, seg.spec, seg.keys[2])
        except Exception as exc:
            log.error("message render failed, playing the generic message", extra={"error": repr(exc)})
            return self.fallback(language)
        # Joining ~30 s of audio is numpy work: in a thread, so a surge's loop stays free for calls.
        prompt = await asyncio.to_thread(
            functools.partial(
                assemble,
                opening,
                body,
                closing,
                language=language,
                text=seg.text.full(),
                source=seg.spec.engine,
            )
        )
        for warning in prompt.warnings:
            log.warning(warning)
        if seg.spec.is_fallback:
            log.warning(FALLBACK_WARNING_ZH)
        return prompt

    def begin(self, subscriber: Subscriber, language: str, *, incident: str = "") -> PendingPrompt:
        """Start making the message ready and return at once (call this right after sending the INVITE)."""
        task = asyncio.get_running_loop().create_task(
            self.ensure(subscriber, language, incident=incident), name=f"prompt-{subscriber.uid}-{language}"
        )

        def late() -> Awaitable[Prompt]:
            return self.ensure(subscriber, language, incident=incident, timeout_s=LATE_TIMEOUT_S)

        return PendingPrompt(self.opening(language), task, late)

    async def wav_path(self, prompt: Prompt) -> Path:
        """A WAV file of exactly this message, for the voice link in the SMS (F6).

        Written once, atomically, under `cache_dir/messages/` named by the hash of its bytes (so
        the same message is one file); the generic message is served from `voice.fallback_dir`.
        """
        if prompt.source == "fallback":
            path = fallback_path(prompt.language, self._fallback_dir())
            return path if path.is_file() else fallback_path("en", self._fallback_dir())
        known = self._wav_paths.get(prompt)
        if known is not None:
            return known
        # Encoding and hashing ~30 s of audio is CPU: off the loop (a surge texts 3 people per
        # incident, and each text's link needs this), and once per prompt.
        return self._wav_paths.put(prompt, await asyncio.to_thread(self._write_wav, prompt))

    def _write_wav(self, prompt: Prompt) -> Path:
        data = prompt.wav()
        path = self.cache.root / "messages" / f"{hashlib.sha256(data).hexdigest()}.wav"
        if not path.is_file():
            write_atomic(path, data)
        return path

    # ------------------------------------------------------------------------------------------
    # Pre-rendering

    def queue_length(self) -> int:
        """Messages waiting to be pre-rendered (the `render queue` metric)."""
        return self._queue.qsize()

    def prerender(self, subscriber: Subscriber) -> int:
        """Queue a subscriber's messages for background rendering (after add, update, import).

        Returns how many messages were queued (0 if already queued or the queue is full). Never
        blocks; safe to call for every row of a bulk import.
        """
        return sum(
            self._enqueue(subscriber, language)
            for language in message_languages(subscriber, self.cfg.emergency.language)
        )

    def _enqueue(self, subscriber: Subscriber, language: str) -> int:
        mark = (subscriber.uid, language)
        if mark in self._queued:
            return 0
        try:
            self._queue.put_nowait((subscriber, language))
        except asyncio.QueueFull:
            logger.warning(
                "prerender queue full; message will be rendered at SOS time", extra={"uid": subscriber.uid}
            )
            return 0
        self._queued.add(mark)
        return 1

    def prerender_many(self, subscribers: Iterable[Subscriber]) -> int:
        return sum(self.prerender(s) for s in subscribers)

    def _note_full(self) -> None:
        if not self._full_logged:
            self._full_logged = True
            logger.warning(
                "prompt cache at voice.cache_max_mb: pre-rendering paused, messages render at SOS time",
                extra={"cache_mb": self.cache.total_bytes() // (1024 * 1024)},
            )

    async def sweep(self, directory: SubscriberSource, *, page: int = 1000) -> int:
        """Queue every subscriber whose message is not in the cache; returns how many were queued.

        For changes made by another process (`voip-sos directory add/update/import` while the
        service runs): call it after an import and every few minutes. One stat per message; pages
        through the directory so a million rows never sit in memory at once.
        """
        queued = 0
        offset = 0
        while self.cache.has_room(APPROX_MESSAGE_BYTES):
            batch = await directory.list(limit=page, offset=offset)
            if not batch:
                break
            offset += len(batch)
            queued += await self.queue_missing(batch)
        return queued

    async def queue_missing(self, subscribers: Iterable[Subscriber]) -> int:
        """Queue the messages of these subscribers that are not in the cache yet."""
        queued = 0
        for sub in subscribers:
            for language in message_languages(sub, self.cfg.emergency.language):
                key = self.segments(sub, language).keys[1]
                if not await asyncio.to_thread(self.cache.contains, key):
                    queued += self._enqueue(sub, language)
        return queued

    async def drain(self) -> None:
        """Wait until the pre-render queue is empty (tests, `prompts render`)."""
        await self._queue.join()

    async def _prerender_worker(self) -> None:
        while True:
            subscriber, language = await self._queue.get()
            self._queued.discard((subscriber.uid, language))
            try:
                seg = self.segments(subscriber, language)
                if not self.cache.has_room(APPROX_MESSAGE_BYTES):
                    # Pre-rendering never evicts: at the bound the rest is rendered at SOS time.
                    self._note_full()
                elif not await asyncio.to_thread(self.cache.contains, seg.keys[1]):
                    if seg.spec.is_fallback:
                        logger.warning(FALLBACK_WARNING_ZH, extra={"uid": subscriber.uid})
                    await self._render(seg.text.body, seg.spec, seg.keys[1], urgent=False)
            except Exception:
                logger.exception("pre-render failed", extra={"uid": subscriber.uid, "language": language})
            finally:
                self._queue.task_done()
