"""RTP on a thread and event loop of its own, so call set-up and media pacing stop taking turns.

On one loop, 300 answered calls' 20 ms ticks (~1.5 ms each, half of it in `sendto`) shared every
turn with the SIP answers and incident starts of a surge, and both waited for each other
(bench/sos_e2e.py). Here the media loop runs the ordinary `RtpEngine` on its own thread: its
socket calls release the GIL and overlap the SIP loop's work on the second core, and neither loop's
turn holds the other's callbacks.

`ThreadedRtpEngine` and `ThreadedRtpSession` have the interface the user agent uses. Ports are
bound on the caller's thread (the INVITE's SDP needs the port at once); everything else is handed
to the media loop in order with `call_soon_threadsafe`, and media events come back the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from typing import Any

from voip_sos.aio.rtp_transport import Addr, EventCallback, RtpEngine, RtpSession, RtpStats
from voip_sos.errors import MediaError
from voip_sos.rtp.events import RtpEvent
from voip_sos.rtp.g711 import Codec
from voip_sos.rtp.prompt import Prompt

__all__ = ["ThreadedRtpEngine", "ThreadedRtpSession"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0


class ThreadedRtpSession:
    """A call's media, living on the media thread; every method returns at once."""

    def __init__(self, owner: ThreadedRtpEngine, real: RtpSession) -> None:
        self._owner = owner
        self._real = real
        self.local_port = real.local_port
        self._on_event: EventCallback | None = None
        self.events: asyncio.Queue[RtpEvent] = asyncio.Queue()
        self.closed = False

    @property
    def local_rtcp_port(self) -> int:
        return self.local_port + 1

    @property
    def stats(self) -> RtpStats:
        return self._real.stats  # plain counters, read across threads

    async def stats_now(self) -> RtpStats:
        return self._real.stats

    def set_remote(
        self,
        addr: Addr,
        *,
        codec: Codec,
        payload_type: int,
        telephone_event_pt: int | None = None,
        rtcp_addr: Addr | None = None,
    ) -> None:
        self._owner._do(
            lambda: self._real.set_remote(
                addr,
                codec=codec,
                payload_type=payload_type,
                telephone_event_pt=telephone_event_pt,
                rtcp_addr=rtcp_addr,
            )
        )

    def start(self, prompt: Prompt | None, *, loop: bool = True, gap_s: float = 0.0) -> None:
        self._owner._do(lambda: self._real.start(prompt, loop=loop, gap_s=gap_s))

    def replace_prompt(self, prompt: Prompt, *, loop: bool = True, gap_s: float = 0.0) -> None:
        self._owner._do(lambda: self._real.replace_prompt(prompt, loop=loop, gap_s=gap_s))

    def preload(self, prompt: Prompt) -> None:
        """Nothing to do: the prompt is in this process already (see media_process)."""

    def restart_prompt(self) -> None:
        self._owner._do(self._real.restart_prompt)

    def silence(self) -> None:
        self._owner._do(self._real.silence)

    def set_sending(self, sending: bool) -> None:
        self._owner._do(lambda: self._real.set_sending(sending))

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        self._owner._do(lambda: self._real.send_dtmf(digit, duration_ms))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self._owner._run(self._real.close())

    def _deliver(self, event: RtpEvent) -> None:
        # On the caller's loop.
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("rtp event callback failed")
        else:
            self.events.put_nowait(event)


class ThreadedRtpEngine:
    """An `RtpEngine` on its own thread and loop (see the module docstring)."""

    def __init__(self, **engine_args: Any) -> None:
        self._args = engine_args
        self._caller: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: RtpEngine | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failed: BaseException | None = None

    @property
    def sessions(self) -> int:
        return self._engine.sessions if self._engine is not None else 0

    async def start(self) -> None:
        self._caller = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, name="rtp-media", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._started.wait, START_TIMEOUT_S)
        if self._failed is not None or self._engine is None:
            raise MediaError(f"media thread did not start: {self._failed!r}")

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def make() -> RtpEngine:
            return RtpEngine(**self._args)

        try:
            self._engine = loop.run_until_complete(make())
        except BaseException as exc:
            self._failed = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def open_now(
        self, *, on_event: EventCallback | None = None, log_context: dict[str, object] | None = None
    ) -> ThreadedRtpSession:
        """Bind a port pair now (on this thread); the media thread starts serving it next."""
        assert self._engine is not None and self._loop is not None
        real, rtp_sock, rtcp_sock = self._engine.bind_session(log_context=log_context)
        proxy = ThreadedRtpSession(self, real)
        if on_event is not None:
            proxy._on_event = on_event
        caller = self._caller
        assert caller is not None

        def forward(event: RtpEvent) -> None:
            caller.call_soon_threadsafe(proxy._deliver, event)

        real._on_event = forward
        engine = self._engine
        self._do(lambda: engine.adopt(real, rtp_sock, rtcp_sock))
        return proxy

    async def open(
        self, *, on_event: EventCallback | None = None, log_context: dict[str, object] | None = None
    ) -> ThreadedRtpSession:
        return self.open_now(on_event=on_event, log_context=log_context)

    async def close(self) -> None:
        if self._loop is None or self._engine is None or self._thread is None:
            return
        engine = self._engine
        with contextlib.suppress(Exception):
            await self._run(engine.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, CLOSE_TIMEOUT_S)

    # -- crossing threads ---------------------------------------------------------------------------

    def _do(self, fn: Any) -> None:
        assert self._loop is not None

        def guarded() -> None:
            try:
                fn()
            except Exception:
                log.exception("media thread: call failed")

        self._loop.call_soon_threadsafe(guarded)

    async def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        fut: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wrap_future(fut)
