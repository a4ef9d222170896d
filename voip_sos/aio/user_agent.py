"""`UserAgent`: the asyncio API the incident layer uses to register, call and send MESSAGE.

It runs the sans-IO `SipAgent` on a `SipTransport` and one `RtpEngine` for media, and turns core
events into per-call events on a `Call` object:
    Ringing / EarlyMedia / Answered / Key / Ended
A call plays its prompt once answered (looping with `gap_s` of silence between plays, ended after
`max_s`), keys arrive whether they came as SIP INFO, RFC 4733 or in-band tones.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from voip_sos.aio.media_process import ProcessRtpEngine, ProcessRtpSession
from voip_sos.aio.rtp_transport import RtpEngine, RtpSession
from voip_sos.aio.sip_transport import SipTransport, local_address_towards
from voip_sos.config import Config, HostPort
from voip_sos.errors import AuthError, ConfigError, LocalProtocolError, VoipSosError
from voip_sos.logs import bind
from voip_sos.rtp import DtmfReceived as RtpDtmf
from voip_sos.rtp import Prompt, RtpEvent
from voip_sos.rtp.g711 import Codec
from voip_sos.sip import AgentConfig, Location, MediaParams, SipAgent, TimerConfig
from voip_sos.sip import events as sev

Media = RtpSession | ProcessRtpSession
MediaPlace = Literal["loop", "process"]

__all__ = [
    "Answered",
    "Call",
    "CallEvent",
    "EarlyMedia",
    "Ended",
    "IncomingCallRequest",
    "Key",
    "RegistrationResult",
    "Ringing",
    "UserAgent",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ringing:
    """The far end is alerting (180) or reports progress (18x without SDP)."""

    status: int
    at: float


@dataclass(frozen=True, slots=True)
class EarlyMedia:
    """A 183 (or 180) carried SDP: we now hear the network's announcements; not an answer."""

    media: MediaParams
    at: float


@dataclass(frozen=True, slots=True)
class Answered:
    """200 OK: the call is up and the prompt is playing."""

    media: MediaParams
    at: float


@dataclass(frozen=True, slots=True)
class Key:
    """The callee pressed a key; `source` is info, rfc4733 or inband."""

    digit: str
    source: str
    at: float


@dataclass(frozen=True, slots=True)
class Ended:
    """The call is over: `by` remote/local/timeout/error, the final SIP status of the INVITE."""

    by: str
    status: int | None
    reason: str
    answered: bool
    at: float


CallEvent = Ringing | EarlyMedia | Answered | Key | Ended


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    state: str
    status: int | None
    reason: str
    expires_s: int | None

    @property
    def ok(self) -> bool:
        return self.state == "registered"


class Call:
    """One call. Read `events` (an asyncio.Queue) or await `answered()` / `ended()`."""

    def __init__(self, ua: UserAgent, call_id: str, media: Media) -> None:
        self.ua = ua
        self.call_id = call_id
        self.media = media
        self.events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self.history: list[CallEvent] = []
        self._answered: asyncio.Future[Answered | None] = asyncio.get_running_loop().create_future()
        self._ended: asyncio.Future[Ended] = asyncio.get_running_loop().create_future()
        self.prompt: Prompt | None = None
        self.loop_prompt = True
        self.gap_s = 0.0
        self.max_s: float | None = None
        self._max_timer: asyncio.TimerHandle | None = None
        self._log = bind(log, call=call_id)

    def _emit(self, event: CallEvent) -> None:
        self.history.append(event)
        self.events.put_nowait(event)
        if isinstance(event, Answered) and not self._answered.done():
            self._answered.set_result(event)
        if isinstance(event, Ended):
            if not self._answered.done():
                self._answered.set_result(None)
            if not self._ended.done():
                self._ended.set_result(event)

    async def answered(self) -> Answered | None:
        """The Answered event, or None if the call ended unanswered."""
        return await asyncio.shield(self._answered)

    async def ended(self) -> Ended:
        return await asyncio.shield(self._ended)

    @property
    def is_ended(self) -> bool:
        return self._ended.done()

    def play(self, prompt: Prompt, *, loop: bool = True, gap_s: float = 1.0) -> None:
        """Play `prompt`: at the next 20 ms frame if answered, else from the answer on."""
        self.prompt, self.loop_prompt, self.gap_s = prompt, loop, gap_s
        if self._answered.done() and self._answered.result() is not None and not self.is_ended:
            self.media.replace_prompt(prompt, loop=loop, gap_s=gap_s)

    def silence(self) -> None:
        """Stop the prompt; the RTP stream goes on with silence."""
        self.prompt = None
        self.media.silence()

    def hangup(self) -> None:
        """CANCEL, BYE or refuse, whichever fits the call's state; Ended follows."""
        self.ua._hangup(self.call_id)

    def export(self) -> dict[str, Any]:
        """Dialog state to store so that a restarted process can still end this call."""
        return self.ua.agent.export_dialog(self.call_id)


class IncomingCallRequest:
    """A received INVITE handed to the application: `answer()` it or `reject()` it."""

    def __init__(self, ua: UserAgent, event: sev.IncomingCall) -> None:
        self.ua = ua
        self.event = event
        self.call_id = event.call_id
        self.caller = event.caller

    async def answer(
        self, prompt: Prompt | None, *, loop: bool = True, gap_s: float = 1.0, max_s: float | None = None
    ) -> Call:
        return await self.ua._answer_incoming(self, prompt, loop, gap_s, max_s)

    def reject(self, status: int = 486) -> None:
        self.ua.agent.reject(self.call_id, status, self.ua._now())
        self.ua._pump()


async def _resolve(hp: HostPort) -> tuple[str, int]:
    """HOST:PORT -> (IP, port); IP literals pass through."""
    try:
        ipaddress.ip_address(hp.host)
        return hp.host, hp.port
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(hp.host, hp.port, type=socket.SOCK_DGRAM)
    if not infos:
        raise ConfigError([f"config error: cannot resolve {hp.host}"])
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first, as SDP and Via are
    addr = infos[0][4]
    return str(addr[0]), int(addr[1])


IncomingHandler = Callable[[IncomingCallRequest], Awaitable[None] | None]


class UserAgent:
    """The SIP user agent on real sockets. `await start()` first, `await close()` at the end."""

    def __init__(
        self,
        config: Config,
        *,
        on_incoming: IncomingHandler | None = None,
        rtp_host: str | None = None,
        media: MediaPlace = "loop",
    ) -> None:
        """`media`: where RTP runs -- "process", a process of its own (voip_sos/aio/media_process.py),
        as `serve` does; "loop", the caller's loop (tools, tests)."""
        self.config = config
        self.on_incoming = on_incoming
        self._rtp_host = rtp_host
        self._media: MediaPlace = media
        self._agent: SipAgent | None = None
        self.transport: SipTransport | None = None
        self.engine: RtpEngine | ProcessRtpEngine | None = None
        self.calls: dict[str, Call] = {}
        self._registration_waiters: list[asyncio.Future[RegistrationResult]] = []
        self._message_waiters: dict[str, asyncio.Future[tuple[int | None, str]]] = {}
        self.registration: RegistrationResult | None = None
        self.local_address: HostPort | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the SIP sockets (UDP + TCP on one port) and the RTP port range."""
        sip = self.config.sip
        hop = sip.proxy or sip.registrar
        host = sip.listen.host
        contact_host = host
        if host in ("0.0.0.0", "::"):
            target = await _resolve(hop) if hop else None
            contact_host = local_address_towards(*target) if target else "127.0.0.1"
        # Resolve the PBX names once, off the loop's critical path: sendto() with a host name
        # would resolve synchronously on every datagram.
        registrar = await _resolve(sip.registrar) if sip.registrar else None
        proxy = await _resolve(sip.proxy) if sip.proxy else None
        udp, port = await SipTransport.bind(host, sip.listen.port)
        self.local_address = HostPort(contact_host, port)
        agent_cfg = AgentConfig(
            user=sip.username,
            domain=sip.domain,
            local_host=contact_host,
            local_port=port,
            password=sip.password,
            display_name=sip.display_name,
            transport=sip.transport,
            registrar=registrar,
            proxy=proxy,
            expires_s=sip.expires_s,
            codecs=self.config.rtp.codecs,
            timers=TimerConfig(t1=sip.t1_s, t2=sip.t2_s, t4=sip.t4_s),
            accept_incoming=self.on_incoming is not None,
        )
        self._agent = SipAgent(agent_cfg)
        self.transport = SipTransport(self.agent, self._on_sip_event)
        await self.transport.start(udp)
        rtp_host = self._rtp_host or (host if host not in ("0.0.0.0", "::") else "0.0.0.0")
        rtp_args: dict[str, Any] = {
            "ports": self.config.rtp.ports,
            "host": rtp_host,
            "symmetric": self.config.rtp.public_ip is None,
        }
        if self._media == "process":
            log_cfg = self.config.log
            process = ProcessRtpEngine(
                **rtp_args,
                log_level=log_cfg.level,
                log_format=log_cfg.format,
                realtime=self.config.sos.realtime,
            )
            await process.start()
            self.engine = process
        else:
            self.engine = RtpEngine(**rtp_args)
        self._media_address = self.config.rtp.public_ip or contact_host
        log.info("user agent started", extra={"sip": f"{contact_host}:{port}"})

    async def close(self, unregister: bool = True, timeout_s: float = 3.0, hangup: bool = True) -> None:
        """Hang up every call, unregister, close sockets. `hangup=False` leaves calls up (as a
        crash would; `Call.export()` + `end_restored()` end them later)."""
        for call in list(self.calls.values()):
            if hangup and not call.is_ended:
                call.hangup()
        pending = [c.ended() for c in self.calls.values() if hangup and not c.is_ended]
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.gather(*pending)
        if unregister and self._agent is not None and self.registration and self.registration.ok:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._registration_outcome(lambda: self.agent.unregister(self._now()))
        if self._tasks:
            # Let media closes (RTCP BYE, ports released) finish; cancel anything stuck.
            _, stuck = await asyncio.wait(list(self._tasks), timeout=timeout_s)
            for task in stuck:
                task.cancel()
        if self.engine is not None:
            await self.engine.close()
        if self.transport is not None:
            await self.transport.close()

    @property
    def agent(self) -> SipAgent:
        if self._agent is None:
            raise LocalProtocolError("UserAgent not started")
        return self._agent

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _pump(self) -> None:
        assert self.transport is not None
        self.transport.pump()

    # -- registration ------------------------------------------------------------------------------

    async def register(self) -> RegistrationResult:
        """REGISTER and wait for the outcome (refreshes then run by themselves)."""
        if self.config.sip.registrar is None and self.config.sip.proxy is None:
            return RegistrationResult("unregistered", None, "no sip.registrar configured", None)
        return await self._registration_outcome(lambda: self.agent.register(self._now()))

    async def _registration_outcome(self, action: Callable[[], None]) -> RegistrationResult:
        fut: asyncio.Future[RegistrationResult] = asyncio.get_running_loop().create_future()
        self._registration_waiters.append(fut)
        action()
        self._pump()
        return await fut

    # -- MESSAGE ------------------------------------------------------------------------------------

    async def message(self, number: str, text: str) -> int | None:
        """Send a MESSAGE (RFC 3428); returns the final SIP status (None: no response)."""
        handle = self.agent.message(number, text, self._now())
        fut: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self._message_waiters[handle] = fut
        self._pump()
        status, _ = await fut
        return status

    # -- calls --------------------------------------------------------------------------------------

    async def call(
        self,
        number: str,
        prompt: Prompt | None,
        loop: bool = True,
        gap_s: float = 1.0,
        max_s: float | None = None,
        *,
        display_name: str | None = None,
        priority: str | None = None,
        location: Location | None = None,
        ring_timeout_s: float | None = None,
    ) -> Call:
        """Place a call; returns at once with a `Call` whose events tell how it goes."""
        return self.call_now(
            number,
            prompt,
            loop,
            gap_s,
            max_s,
            display_name=display_name,
            priority=priority,
            location=location,
            ring_timeout_s=ring_timeout_s,
        )

    def call_now(
        self,
        number: str,
        prompt: Prompt | None,
        loop: bool = True,
        gap_s: float = 1.0,
        max_s: float | None = None,
        *,
        display_name: str | None = None,
        priority: str | None = None,
        location: Location | None = None,
        ring_timeout_s: float | None = None,
    ) -> Call:
        """`call` without leaving the caller's callback: the INVITE is on the wire when it returns."""
        assert self.engine is not None
        media = self.engine.open_now(log_context={"number": number})
        try:
            call_id = self.agent.invite(
                number,
                self._media_address,
                media.local_port,
                self._now(),
                display_name=display_name,
                priority=priority,
                location=location,
            )
        except VoipSosError:
            self._spawn(media.close())
            raise
        call = self._new_call(call_id, media, prompt, loop, gap_s, max_s)
        if ring_timeout_s is not None:
            self._later(ring_timeout_s, lambda: self._ring_timeout(call))
        self._pump()
        if prompt is not None:
            media.preload(prompt)  # after the INVITE is on the wire: ready by the answer
        return call

    def _new_call(
        self,
        call_id: str,
        media: Media,
        prompt: Prompt | None,
        loop: bool,
        gap_s: float,
        max_s: float | None,
    ) -> Call:
        call = Call(self, call_id, media)
        call.prompt, call.loop_prompt, call.gap_s, call.max_s = prompt, loop, gap_s, max_s
        media._on_event = lambda ev: self._on_rtp_event(call, ev)
        self.calls[call_id] = call
        return call

    def _later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, fn)

    def _ring_timeout(self, call: Call) -> None:
        if call._answered.done() or call.is_ended:
            return
        call._log.info("no answer in time; cancelling")
        self._hangup(call.call_id)

    def _hangup(self, call_id: str) -> None:
        try:
            self.agent.hangup(call_id, self._now())
        except LocalProtocolError as exc:
            log.info("hangup %s: %s", call_id, exc)
        self._pump()

    async def end_restored(self, state: dict[str, Any]) -> Ended:
        """BYE a call exported by an earlier process (`Call.export()`); returns its Ended."""
        assert self.engine is not None
        call_id = self.agent.restore_dialog(state, self._now())
        media = await self.engine.open(log_context={"restored": call_id})
        call = self._new_call(call_id, media, None, False, 0.0, None)
        self._hangup(call_id)
        return await call.ended()

    async def _answer_incoming(
        self, req: IncomingCallRequest, prompt: Prompt | None, loop: bool, gap_s: float, max_s: float | None
    ) -> Call:
        assert self.engine is not None
        media = await self.engine.open(log_context={"call": req.call_id})
        call = self._new_call(req.call_id, media, prompt, loop, gap_s, max_s)
        self.agent.answer(req.call_id, self._media_address, media.local_port, self._now())
        self._pump()
        return call

    # -- events -------------------------------------------------------------------------------------

    def _set_remote(self, call: Call, media: MediaParams) -> None:
        codec: Codec = "PCMA" if media.codec == "PCMA" else "PCMU"
        call.media.set_remote(
            (media.remote_addr, media.remote_port),
            codec=codec,
            payload_type=media.payload_type,
            telephone_event_pt=media.dtmf_payload_type,
        )

    def _on_sip_event(self, event: sev.Event) -> None:
        now = self._now()
        if isinstance(event, sev.RegistrationChanged):
            if event.state in ("registering",):
                return
            self.registration = RegistrationResult(event.state, event.status, event.reason, event.expires_s)
            for fut in self._registration_waiters:
                if not fut.done():
                    fut.set_result(self.registration)
            self._registration_waiters.clear()
            return
        if isinstance(event, sev.MessageResult):
            waiter = self._message_waiters.pop(event.handle, None)
            if waiter is not None and not waiter.done():
                waiter.set_result((event.status, event.reason))
            return
        if isinstance(event, sev.IncomingCall):
            self._incoming(event)
            return
        if isinstance(event, sev.MessageReceived):
            log.info("MESSAGE received", extra={"from": event.sender})
            return
        call = self.calls.get(event.call_id)
        if call is None:
            return
        if isinstance(event, sev.CallProgressed):
            if event.early_media is not None:
                self._set_remote(call, event.early_media)
                call._emit(EarlyMedia(event.early_media, now))
            else:
                call._emit(Ringing(event.status, now))
        elif isinstance(event, sev.CallAnswered):
            self._set_remote(call, event.media)
            call.media.start(call.prompt, loop=call.loop_prompt, gap_s=call.gap_s)
            if call.max_s is not None:
                call._max_timer = self._later(call.max_s, lambda: self._hangup(call.call_id))
            call._emit(Answered(event.media, now))
        elif isinstance(event, sev.MediaUpdated):
            self._set_remote(call, event.media)
            if event.media.on_hold:
                # RFC 3264 §6.1: our answer to sendonly/inactive is recvonly/inactive: send nothing.
                call.media.set_sending(False)
            else:
                call.media.set_sending(True)
                if call.prompt is not None:
                    call.media.replace_prompt(call.prompt, loop=call.loop_prompt, gap_s=call.gap_s)
        elif isinstance(event, sev.DtmfReceived):
            call._emit(Key(event.key, "info", now))
        elif isinstance(event, sev.CallEnded):
            if call._max_timer is not None:
                call._max_timer.cancel()
            call._emit(Ended(event.by, event.status, event.reason, event.answered, now))
            self._spawn(call.media.close())
            del self.calls[call.call_id]  # the Call object stays with whoever holds it

    def _on_rtp_event(self, call: Call, event: RtpEvent) -> None:
        if isinstance(event, RtpDtmf):
            call._emit(Key(event.digit, event.source, event.at))

    def _incoming(self, event: sev.IncomingCall) -> None:
        if self.on_incoming is None:
            self.agent.reject(event.call_id, 486, self._now())
            self._pump()
            return
        result = self.on_incoming(IncomingCallRequest(self, event))
        if result is not None:
            self._spawn(result)

    def _spawn(self, aw: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await aw
            except (VoipSosError, AuthError):
                log.exception("background task failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
