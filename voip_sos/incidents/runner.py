"""The incident runner: carries out the incident core's commands with the real parts (F5-F7).

An accepted SOS (the listener's `on_recorded` hook) becomes a live incident: an `IncidentCore` and
its commands carried out here — calls through the `UserAgent`, texts through the `SmsTransport`,
STATUS through the SOS listener, the log through the `IncidentStore`. Every command is appended to
the incident's log **before** it is carried out, and every answered call's SIP dialog is logged, so
that after a crash `resume_open()` can end the calls left open (BYE from the new process), call
again everyone who had not confirmed, and resend any SMS whose result was never recorded.

One incident's failure never stops another: each incident's work runs in its own tasks and every
command is guarded; an error is logged with the incident id and the incident goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from voip_sos.aio.user_agent import Answered, Call, Ended, IncomingCallRequest, Key, Ringing, UserAgent
from voip_sos.config import Config
from voip_sos.directory import Directory, Subscriber
from voip_sos.incidents.commands import (
    CallAnswered,
    CallEnded,
    CallRinging,
    CancelCall,
    CancelRequested,
    CloseIncident,
    CodesUpdated,
    Command,
    Event,
    PlaceCall,
    SendSms,
    SendStatus,
    SmsKind,
    SmsSent,
    StbStatus,
)
from voip_sos.incidents.core import IncidentCore, Policy
from voip_sos.incidents.group_commit import GroupCommit
from voip_sos.incidents.holds import IncidentHolds, backend_id
from voip_sos.incidents.location import location_of
from voip_sos.incidents.recording import EventRecord, Recorded, RequestRecord
from voip_sos.incidents.replay import Replayed, replay
from voip_sos.incidents.store import IncidentStore
from voip_sos.logs import ContextLogger, bind
from voip_sos.notify.sms import SmsFacts, SmsTransport, codes_text, emergency_text, false_alarm_text
from voip_sos.rtp import Prompt as RtpPrompt
from voip_sos.sos.wire import StatusCode
from voip_sos.voice.prompt import PerPrompt
from voip_sos.voice.prompt import Prompt as VoicePrompt
from voip_sos.voice.service import PromptService
from voip_sos.web.family import issue_family_link
from voip_sos.web.links import Link, LinkStore, family_url

__all__ = ["IncidentRunner", "StatusSink"]

logger = logging.getLogger(__name__)

STATUS_CODES = {
    StbStatus.CALLING: StatusCode.CALLING,
    StbStatus.CONFIRMED_BY_CENTRE: StatusCode.CONFIRMED_CENTRE,
    StbStatus.CONFIRMED_BY_CONTACT: StatusCode.CONFIRMED_CONTACT,
    StbStatus.NOBODY_REACHED: StatusCode.NOBODY_REACHED,
    StbStatus.CLOSED: StatusCode.CLOSED,
}
CONFIRM_KEY = "1"
REPEAT_KEY = "9"
# After "confirmed, thank you" has played, wait this much more before the BYE.
CONFIRM_TAIL_S = 0.5
SMS_PROMPT_WAIT_S = 15.0
# Encoded prompts kept for reuse (~0.7 MB each): enough for the calls a surge starts together.
RTP_PROMPT_CACHE = 64
# Texts prepared at once (see _send_sms).
SMS_LANES = 4


class StatusSink(Protocol):
    def __call__(self, incident_id: int, ip: str, status: StatusCode, detail: str | None = None) -> int: ...


def rtp_prompt(prompt: VoicePrompt) -> RtpPrompt:
    return RtpPrompt.from_pcm(prompt.pcm, name=prompt.source)


def _wall() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class _Live:
    """One incident this process is running."""

    id: int
    stb_ip: str
    sub: Subscriber
    test: bool
    core: IncidentCore
    log: ContextLogger
    timer: asyncio.TimerHandle | None = None
    calls: dict[str, Call] = field(default_factory=dict)
    call_langs: dict[str, str] = field(default_factory=dict)
    confirmed: set[str] = field(default_factory=set)
    cancelled: dict[str, str] = field(default_factory=dict)  # call id -> why we cancelled it
    prompts: dict[str, asyncio.Task[VoicePrompt]] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    numbers: set[str] = field(default_factory=set)
    closed_at: float | None = None


class IncidentRunner:
    """Runs every incident of this process; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        directory: Directory,
        store: IncidentStore,
        ua: UserAgent,
        prompts: PromptService,
        sms: SmsTransport,
        send_status: StatusSink,
        links: LinkStore | None = None,
        metrics: Any | None = None,
    ) -> None:
        self._cfg = cfg
        self.runner_id = backend_id(cfg.sos)
        self._holds = IncidentHolds(
            store, self.runner_id, cfg.emergency.takeover_s, lambda: self._live, self._let_go,
            lambda inc: self._resume(inc.id, inc.stb_ip, inc.uid, inc.test),
        )  # fmt: skip
        self._directory = directory
        self._store = store
        self._ua = ua
        self._prompts = prompts
        self._sms = sms
        self._send_status = send_status
        self._links = links
        self._metrics = metrics
        self._log = GroupCommit(store)
        self._rtp_cache: PerPrompt[RtpPrompt] = PerPrompt(RTP_PROMPT_CACHE)
        self._sms_lanes = asyncio.Semaphore(SMS_LANES)
        self._live: dict[int, _Live] = {}
        self._recent: dict[int, _Live] = {}  # closed, kept for call-backs
        self._closing = False
        e = cfg.emergency
        self._policy = Policy(
            center=e.center,
            backup=e.backup,
            test_number=e.test_number,
            centre_language=e.language,
            redial=e.redial,
            redial_pause_s=e.redial_pause_s,
            ring_timeout_s=e.ring_timeout_s,
            max_call_s=e.max_call_s,
            contacts_mode=e.contacts_mode,
            codes_settle_s=e.codes_settle_s,
        )

    # -- entry points -----------------------------------------------------------------------------

    @property
    def open_incidents(self) -> list[int]:
        return sorted(self._live)

    def recorded_now(self, rec: RequestRecord, res: Recorded) -> Awaitable[None] | None:
        """The SOS listener recorded a request (and sent its RECEIPT). Acted on at once where it
        can be: an SOS whose subscriber the listener looked up has its INVITEs on the wire when this
        returns. Returns what is left to await (a start that must ask the directory first), or None."""
        if res.incident_id is None or res.again or self._closing:
            return None
        if rec.kind == "sos" and res.opened:
            if rec.subscriber is not None and rec.subscriber.uid == rec.uid:
                self._start(res.incident_id, rec.stb_ip, rec.subscriber, test=rec.test)
                return None
            return self.open(res.incident_id, rec.stb_ip, rec.uid, test=rec.test)
        elif rec.kind == "update":
            live = self._live.get(res.incident_id)
            door, parking = rec.detail.get("door_code"), rec.detail.get("parking_code")
            if live is not None and (door or parking):
                self._feed(live, CodesUpdated(door_code=door, parking_code=parking))
        elif rec.kind == "cancel":
            live = self._live.get(res.incident_id)
            if live is not None:
                self._feed(live, CancelRequested())
        return None

    def hub_codes(self, incident_id: int, door_code: str | None, parking_code: str | None) -> bool:
        """The incident's home hub reported a code (authoritative; the STB's repeat of it is
        recognised): a follow-up SMS as for an UPDATE. False when the incident is not live here."""
        live = self._live.get(incident_id)
        if live is None:
            return False
        self._feed(live, CodesUpdated(door_code=door_code, parking_code=parking_code, from_hub=True))
        return True

    async def open(
        self,
        incident_id: int,
        stb_ip: str,
        uid: str,
        *,
        test: bool,
        pressed: float = 0.0,
        subscriber: Subscriber | None = None,
    ) -> None:
        """Start a new incident: calls and SMS go out at once, in parallel."""
        sub = (
            subscriber if subscriber is not None and subscriber.uid == uid else await self._directory.get(uid)
        )
        if sub is None:
            bind(logger, incident=incident_id, uid=uid).error(
                "subscriber vanished between lookup and start; nobody can be called"
            )
            return
        self._start(incident_id, stb_ip, sub, test=test)

    def _start(self, incident_id: int, stb_ip: str, sub: Subscriber, *, test: bool) -> None:
        log = bind(logger, incident=incident_id, uid=sub.uid)
        live = self._new_live(incident_id, stb_ip, sub, test, log)
        if live is None:
            return
        live.core.start(self._now())
        log.info("incident started", extra={"test": test, "parties": list(live.core.party_states())})
        self._drain(live)
        # Held in the database at the next renewal (nobody may take an incident nobody holds for
        # `takeover_s` after it opened): nothing more for the database while a surge starts.

    async def resume_open(self, *, after_crash: bool = True) -> int:
        """Take over every open incident this runner does not run, from its log. Returns how many.

        `after_crash`: this process has just started (calls left up by the dead one are ended).
        False when only the SOS listener process was replaced: every call of this process is
        still up and its own, and only incidents recorded but never handed over are started."""
        resumed = 0
        now = _wall()
        # A CANCEL closes the incident in the store at once, but answered calls go on until the far
        # end hangs up: calls of an incident cancelled within max_call_s may still be up.
        recent = now - timedelta(seconds=self._cfg.emergency.max_call_s)
        for inc in await self._store.list(limit=1_000) if after_crash else ():
            if inc.closed_at is not None and inc.state == "cancelled" and inc.closed_at > recent:
                if (await self._store.runner_of(inc.id))[0] not in (None, self.runner_id):
                    continue  # another backend's: it ends its own calls
                log = bind(logger, incident=inc.id, uid=inc.uid)
                try:
                    await self._finish_cancelled(log, inc.id, inc.close_reason or "false_alarm")
                except Exception:
                    log.exception("ending the calls of a cancelled incident failed")
        if after_crash:
            candidates = await self._holds.claimable(now)
        else:
            # Only the listener process was replaced: incidents it recorded but never handed over.
            candidates = []
            for inc in await self._store.list(open_only=True, limit=10_000):
                if inc.id in self._live or await self._handed_over(inc.id):
                    continue  # a runner (maybe another backend's, sharing PostgreSQL) has it
                if inc.id in await self._store.hold(self.runner_id, [inc.id], self._holds.until(now)):
                    candidates.append(inc)
        for inc in candidates:
            if inc.id in self._live:
                continue
            try:
                if await self._resume(inc.id, inc.stb_ip, inc.uid, inc.test):
                    resumed += 1
            except Exception:
                logger.exception("resuming an incident failed", extra={"incident": inc.id})
        return resumed

    def start_holding(self) -> None:
        """Renew this backend's hold on its incidents and take over those of a backend that stopped
        renewing (voip_sos/incidents/holds.py)."""
        self._holds.start()

    def _let_go(self, incident_id: int, runner: str | None) -> None:
        # Its calls stay up: the backend that took it over ends them (it knows their dialogs).
        live = self._live.pop(incident_id, None)
        if live is None:
            return
        live.log.error(
            "incident taken over by another backend (this one did not renew its hold in time): "
            "no longer run here",
            extra={"runner": runner},
        )
        if live.timer is not None:
            live.timer.cancel()
        for task in list(live.tasks):
            task.cancel()

    async def on_incoming(self, req: IncomingCallRequest) -> None:
        """A call to our number: a call-back from someone of an open or recent incident, or refused."""
        caller = _digits(req.caller)
        live = self._callback_incident(caller)
        if live is None:
            logger.info(
                "incoming call refused: not a party of a recent incident", extra={"caller": req.caller}
            )
            req.reject(403)
            return
        language = live.sub.language if caller not in self._centre_numbers() else self._cfg.emergency.language
        prompt = await self._prompt(live, language)
        call = await req.answer(
            self._rtp_prompt(prompt),
            loop=True,
            gap_s=self._cfg.emergency.loop_gap_s,
            max_s=self._cfg.emergency.max_call_s,
        )
        call_id = f"callback:{caller}:{req.call_id[:8]}"
        live.log.info("call-back answered with the incident's message", extra={"caller": req.caller})
        await self._append(live, "callback_answered", {"caller": req.caller, "call": call_id})
        self._spawn(live, self._follow_callback(live, call, call_id, prompt))

    async def close(self) -> None:
        """Stop taking work; timers off. Open incidents stay open in the database for a restart."""
        self._closing = True
        await self._holds.close()
        for live in list(self._live.values()):
            if live.timer is not None:
                live.timer.cancel()
            for task in list(live.tasks):
                task.cancel()
        for live in list(self._live.values()):
            for task in list(live.tasks):
                with contextlib.suppress(BaseException):
                    await task

    # -- the core and its commands -----------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _new_live(
        self, incident_id: int, stb_ip: str, sub: Subscriber, test: bool, log: ContextLogger
    ) -> _Live | None:
        try:
            core = IncidentCore(str(incident_id), self._policy, sub.contacts, sub.language, test=test)
        except Exception as exc:
            # Tell the truth at once: the TV must not show "calling" when nobody can be called.
            log.error("incident cannot call anybody", extra={"error": str(exc)})
            self._send_status(incident_id, stb_ip, StatusCode.NOBODY_REACHED, "nobody to call")
            return None
        live = _Live(incident_id, stb_ip, sub, test, core, log)
        # Who may call back into it: whom it calls. A TEST incident calls only the test line, and
        # the test line is no party of a real one.
        if test:
            live.numbers = {_digits(self._policy.test_number)} if self._policy.test_number else set()
        else:
            live.numbers = {_digits(n) for n in (self._policy.center, self._policy.backup) if n}
            live.numbers |= {_digits(c.phone) for c in sub.contacts}
        self._live[incident_id] = live
        if self._metrics is not None:
            self._metrics.incident_opened()
        return live

    def _feed(self, live: _Live, event: Event) -> None:
        try:
            live.core.handle_event(event, self._now())
        except Exception:
            live.log.exception("incident core refused an event", extra={"event": type(event).__name__})
        self._drain(live)

    def _on_timer(self, live: _Live) -> None:
        live.timer = None
        try:
            live.core.handle_timer(self._now())
        except Exception:
            live.log.exception("incident core failed on its timer")
        self._drain(live)

    def _drain(self, live: _Live) -> None:
        while (cmd := live.core.next_command()) is not None:
            try:
                self._carry_out(live, cmd)
            except Exception:
                live.log.exception("carrying out a command failed", extra={"command": type(cmd).__name__})
        if live.timer is not None:
            live.timer.cancel()
            live.timer = None
        deadline = live.core.get_timer()
        if deadline is not None and not live.core.closed:
            live.timer = asyncio.get_running_loop().call_at(deadline, self._on_timer, live)

    def _carry_out(self, live: _Live, cmd: Command) -> None:
        if isinstance(cmd, PlaceCall):
            self._place_call(live, cmd)
        elif isinstance(cmd, CancelCall):
            call = live.calls.get(cmd.call_id)
            live.cancelled[cmd.call_id] = cmd.reason
            self._spawn(live, self._append(live, "call_cancel", {"call": cmd.call_id, "reason": cmd.reason}))
            if call is not None:
                call.hangup()
        elif isinstance(cmd, SendSms):
            self._spawn(live, self._send_sms(live, cmd))
        elif isinstance(cmd, SendStatus):
            self._send_status(live.id, live.stb_ip, STATUS_CODES[cmd.status])
            live.log.info("STATUS to the STB", extra={"status": cmd.status.value})
        elif isinstance(cmd, CloseIncident):
            self._spawn(live, self._close_incident(live, cmd.reason))

    def _spawn(self, live: _Live, aw: Awaitable[Any]) -> None:
        async def guarded() -> None:
            try:
                await aw
            except asyncio.CancelledError:
                raise
            except Exception:
                live.log.exception("incident task failed")

        task = asyncio.ensure_future(guarded())
        live.tasks.add(task)
        task.add_done_callback(live.tasks.discard)

    async def _append(self, live: _Live, kind: str, detail: dict[str, Any]) -> None:
        await self._log.append(EventRecord(live.id, kind, _wall(), detail))

    # -- calls -------------------------------------------------------------------------------------

    def _prompt_task(self, live: _Live, language: str) -> asyncio.Task[VoicePrompt]:
        task = live.prompts.get(language)
        if task is None:
            task = asyncio.ensure_future(self._prompts.ensure(live.sub, language, incident=str(live.id)))
            live.prompts[language] = task
        return task

    async def _prompt(self, live: _Live, language: str) -> VoicePrompt:
        return await asyncio.shield(self._prompt_task(live, language))

    def _place_call(self, live: _Live, cmd: PlaceCall) -> None:
        """Send the INVITE now, in this very callback: in a surge every loop turn is long, and the
        centre's phone ringing comes first. What follows the call runs as a task.

        The log entry takes its place first (after a crash it says this call may exist), but the
        INVITE does not wait for its commit; a crash in the milliseconds between leaves an INVITE
        the log does not know, and the resumed incident places that call again."""
        logged = self._log.submit(
            EventRecord(
                live.id,
                "call_placed",
                _wall(),
                {
                    "call": cmd.call_id,
                    "number": cmd.number,
                    "party": cmd.party,
                    "attempt": cmd.attempt,
                    "language": cmd.language,
                },
            )
        )
        ready = live.prompts.get(cmd.language)
        prompt = ready.result() if ready is not None and ready.done() and not ready.exception() else None
        e = self._cfg.emergency
        try:
            call = self._ua.call_now(
                cmd.number,
                self._rtp_prompt(prompt) if prompt is not None else self._opening(cmd.language),
                loop=prompt is not None,
                gap_s=e.loop_gap_s,
                max_s=cmd.max_call_s,
                display_name=self._display_name(live),
                priority="emergency" if cmd.emergency else None,
                location=location_of(live.sub, live.id, self._cfg.sip.domain)
                if cmd.emergency and e.pidf_lo
                else None,
            )
        except Exception as exc:
            live.log.error("call could not be placed", extra={"call": cmd.call_id, "error": str(exc)})
            self._spawn(live, self._not_placed(live, cmd, logged, str(exc)))
            return
        live.calls[cmd.call_id] = call
        live.call_langs[cmd.call_id] = cmd.language
        live.log.info(
            "INVITE sent",
            extra={
                "call": cmd.call_id,
                "number": cmd.number,
                "attempt": cmd.attempt,
                "sip_call_id": call.call_id,
            },
        )
        if prompt is None:
            # Rendered in parallel with the call set-up, never before it: the INVITE is out already.
            self._spawn(live, self._when_prompt_ready(live, cmd.call_id, cmd.language))
        self._spawn(live, self._placed(live, cmd.call_id, call, logged))

    async def _placed(self, live: _Live, call_id: str, call: Call, logged: Awaitable[None]) -> None:
        await logged
        await self._follow_call(live, call_id, call)

    async def _not_placed(self, live: _Live, cmd: PlaceCall, logged: Awaitable[None], error: str) -> None:
        await logged
        await self._append(live, "call_failed", {"call": cmd.call_id, "error": error})
        self._feed(live, CallEnded(cmd.call_id, confirmed=False, answered=False, status=None))

    def _rtp_prompt(self, prompt: VoicePrompt) -> RtpPrompt:
        """The prompt as RTP frames, encoded once however many calls play it (a surge's three
        calls per incident, and every caller of the generic messages)."""
        found = self._rtp_cache.get(prompt)
        return found if found is not None else self._rtp_cache.put(prompt, rtp_prompt(prompt))

    def _opening(self, language: str) -> RtpPrompt:
        return self._rtp_prompt(self._prompts.opening(language))

    async def _when_prompt_ready(self, live: _Live, call_id: str, language: str) -> None:
        prompt = await self._prompt(live, language)
        call = live.calls.get(call_id)
        if call is not None and not call.is_ended and call_id not in live.confirmed:
            call.play(self._rtp_prompt(prompt), loop=True, gap_s=self._cfg.emergency.loop_gap_s)

    async def _follow_call(self, live: _Live, call_id: str, call: Call) -> None:
        confirmed = False
        while True:
            event = await call.events.get()
            if isinstance(event, Ringing):
                self._feed(live, CallRinging(call_id))
                await self._append(live, "call_ringing", {"call": call_id, "status": event.status})
            elif isinstance(event, Answered):
                self._feed(live, CallAnswered(call_id))
                await self._append(
                    live,
                    "call_answered",
                    {"call": call_id, "codec": event.media.codec, "dialog": call.export()},
                )
            elif isinstance(event, Key):
                await self._append(
                    live, "dtmf", {"call": call_id, "key": event.digit, "source": event.source}
                )
                if event.digit == CONFIRM_KEY and not confirmed:
                    confirmed = True
                    live.confirmed.add(call_id)
                    await self._confirm(live, call_id, call, live.call_langs.get(call_id, "en"))
                elif event.digit == REPEAT_KEY and not confirmed:
                    prompt = await self._prompt(live, live.call_langs.get(call_id, "en"))
                    call.play(self._rtp_prompt(prompt), loop=True, gap_s=self._cfg.emergency.loop_gap_s)
            elif isinstance(event, Ended):
                await self._ended(live, call_id, event, confirmed)
                return

    async def _confirm(self, live: _Live, call_id: str, call: Call, language: str) -> None:
        live.log.info("callee pressed 1: confirmed", extra={"call": call_id})
        thanks = await self._prompts.confirmation(language)
        call.play(self._rtp_prompt(thanks), loop=False, gap_s=0.0)
        await asyncio.sleep(thanks.duration_s + CONFIRM_TAIL_S)
        if not call.is_ended:
            call.hangup()

    async def _ended(self, live: _Live, call_id: str, event: Ended, confirmed: bool) -> None:
        live.calls.pop(call_id, None)
        result = _call_result(event, confirmed)
        if result == "cancelled" and live.cancelled.pop(call_id, None) == "no answer":
            result = "no_answer"  # our CANCEL after ring_timeout_s: the 487 means nobody answered
        live.log.info(
            "call ended", extra={"call": call_id, "by": event.by, "status": event.status, "result": result}
        )
        await self._append(
            live,
            "call_ended",
            {
                "call": call_id,
                "by": event.by,
                "status": event.status,
                "answered": event.answered,
                "confirmed": confirmed,
                "result": result,
            },
        )
        if self._metrics is not None:
            self._metrics.call_ended(result)
        self._feed(
            live, CallEnded(call_id, confirmed=confirmed, answered=event.answered, status=event.status)
        )

    async def _follow_callback(self, live: _Live, call: Call, call_id: str, prompt: VoicePrompt) -> None:
        confirmed = False
        while True:
            event = await call.events.get()
            if isinstance(event, Key):
                await self._append(
                    live, "dtmf", {"call": call_id, "key": event.digit, "source": event.source}
                )
                if event.digit == CONFIRM_KEY and not confirmed:
                    confirmed = True
                    await self._confirm(live, call_id, call, prompt.language)
                elif event.digit == REPEAT_KEY and not confirmed:
                    call.play(self._rtp_prompt(prompt), loop=True, gap_s=self._cfg.emergency.loop_gap_s)
            elif isinstance(event, Ended):
                await self._append(
                    live, "callback_ended", {"call": call_id, "by": event.by, "confirmed": confirmed}
                )
                return

    # -- SMS ---------------------------------------------------------------------------------------

    async def _send_sms(self, live: _Live, cmd: SendSms) -> None:
        # Texts are prepared a few at a time: a surge's hundreds of texts (links, prompts, logging)
        # otherwise fill every loop turn, and the next press's INVITEs wait behind all of them.
        async with self._sms_lanes:
            text = await self._sms_text(live, cmd)
        try:
            result = await self._sms.send(cmd.number, text)
            status, accepted = result.status, result.accepted
        except Exception as exc:
            live.log.error("SMS transport failed", extra={"sms": cmd.sms_id, "error": str(exc)})
            status, accepted = None, False
        await self._append(
            live,
            "sms_result",
            {
                "sms": cmd.sms_id,
                "number": cmd.number,
                "kind": cmd.kind.value,
                "status": status,
                "accepted": accepted,
                "text": text,
            },
        )
        live.log.info(
            "SMS", extra={"sms": cmd.sms_id, "number": cmd.number, "status": status, "accepted": accepted}
        )
        if self._metrics is not None:
            self._metrics.sms_sent("accepted" if accepted else "failed")
        self._feed(live, SmsSent(cmd.sms_id, status))

    async def _sms_text(self, live: _Live, cmd: SendSms) -> str:
        await self._append(
            live,
            "sms_sending",
            {"sms": cmd.sms_id, "number": cmd.number, "kind": cmd.kind.value, "party": cmd.party},
        )
        centre = cmd.party in ("centre", "test")
        language = self._cfg.emergency.language if centre else live.sub.language
        facts = SmsFacts(
            language,
            test=live.test,
            door_code=cmd.door_code,
            parking_code=cmd.parking_code,
            for_centre=centre,
        )
        if cmd.kind is SmsKind.EMERGENCY:
            facts = dataclasses.replace(
                facts,
                voice_url=await self._voice_link(live, language),
                family_url=await self._family_link(live, cmd.party),
            )
            text = emergency_text(live.sub, facts)
        elif cmd.kind is SmsKind.CODES:
            text = codes_text(live.sub, facts)
        else:
            text = false_alarm_text(live.sub, facts)
        return text

    async def _voice_link(self, live: _Live, language: str) -> str | None:
        if self._links is None:
            return None
        try:
            async with asyncio.timeout(SMS_PROMPT_WAIT_S):
                prompt = await self._prompt(live, language)
            path = await self._prompts.wav_path(prompt)
        except Exception as exc:
            live.log.error("no voice link for the SMS", extra={"error": repr(exc)})
            return None
        expires = _wall() + timedelta(seconds=self._cfg.http.link_ttl_s)
        token = await self._links.create(Link(str(live.id), "voice", str(path), expires))
        return f"{self._cfg.http.public_url}/v/{token}"

    async def _family_link(self, live: _Live, party: str) -> str | None:
        """A contact's own link to the family page (the page calls the reader "you": never shared)."""
        if self._links is None or not party.startswith("contact:"):
            return None
        try:
            token = await issue_family_link(self._links, live.id, party, self._cfg.http.family_link_ttl_s)
        except Exception as exc:
            live.log.error("no family link for the SMS", extra={"party": party, "error": repr(exc)})
            return None
        return family_url(self._cfg.http.public_url, token)

    # -- closing and resuming ----------------------------------------------------------------------

    async def _close_incident(self, live: _Live, reason: str) -> None:
        outcome = {"reached": live.core.reached}
        if not await self._store.close(live.id, _wall(), reason, detail=outcome):
            # Closed already (a CANCEL closes the incident in the store at once); its calls have
            # only now ended: record how they ended, once.
            await self._append(live, "calls_finished", {"reason": reason, **outcome})
        if reason == "unreached":
            live.log.error("nobody confirmed after all retries", extra={"reason": reason})
        else:
            live.log.info("incident closed", extra={"reason": reason, "reached": live.core.reached})
        if self._metrics is not None:
            self._metrics.incident_closed(reason)
        live.closed_at = self._now()
        self._live.pop(live.id, None)
        self._recent[live.id] = live
        self._forget_old()

    def _forget_old(self) -> None:
        cutoff = self._now() - self._cfg.emergency.callback_window_s
        for iid, live in list(self._recent.items()):
            if live.closed_at is not None and live.closed_at < cutoff:
                del self._recent[iid]

    def _callback_incident(self, caller: str) -> _Live | None:
        self._forget_old()
        for pool in (self._live, self._recent):
            for live in sorted(pool.values(), key=lambda lv: -lv.id):
                if caller and caller in live.numbers:
                    return live
        return None

    def _centre_numbers(self) -> set[str]:
        return {_digits(n) for n in (self._policy.center, self._policy.backup, self._policy.test_number) if n}

    def _display_name(self, live: _Live) -> str:
        return f"{'TEST ' if live.test else ''}One-key SOS {live.sub.uid}"

    async def _handed_over(self, incident_id: int) -> bool:
        """Some runner has acted on this incident (its first steps are logged at once)."""
        return any(
            e.kind in ("call_placed", "sms_sending", "incident_resumed")
            for e in await self._store.events(incident_id)
        )

    async def _finish_cancelled(self, log: ContextLogger, incident_id: int, reason: str) -> None:
        """A cancelled incident whose answered calls were still up at the crash: end them, then
        record how its calls finished, as the live runner would have when the last one ended."""
        past = replay(await self._store.events(incident_id))
        if past.calls_finished:
            return
        await self._end_left_open(log, past)
        detail = {"reason": reason, "reached": sorted(past.confirmed), "after_restart": True}
        await self._store.append_events([EventRecord(incident_id, "calls_finished", _wall(), detail)])

    async def _end_left_open(self, log: ContextLogger, past: Replayed) -> None:
        """BYE every call that was up when the process died, or the far end hears silence forever."""
        for call, dialog in past.left_open:
            try:
                bye = await asyncio.wait_for(self._ua.end_restored(dialog), timeout=40)
                log.info("call left open by the crash ended", extra={"call": call, "by": bye.by})
            except Exception as exc:
                log.warning("could not end a call left open", extra={"call": call, "error": str(exc)})

    async def _resume(self, incident_id: int, stb_ip: str, uid: str, test: bool) -> bool:
        log = bind(logger, incident=incident_id, uid=uid)
        past = replay(await self._store.events(incident_id))
        await self._end_left_open(log, past)
        sub = await self._directory.get(uid)
        if sub is None:
            log.error("cannot resume: subscriber no longer in the directory")
            return False
        live = self._new_live(incident_id, stb_ip, sub, test, log)
        if live is None:
            return False
        confirmed = sorted(past.confirmed)
        detail = {"confirmed": confirmed, "told": len(past.told), "runner": self.runner_id}
        await self._append(live, "incident_resumed", detail)
        live.core.resume(
            self._now(), confirmed=set(past.confirmed), told=list(past.told),
            door_code=past.door_code, parking_code=past.parking_code,
        )  # fmt: skip
        log.info("incident resumed after restart", extra={"confirmed": confirmed})
        self._drain(live)
        return True


def _digits(number: str | None) -> str:
    """A number as its dialable characters (a SIP URI or display form reduced to +digits)."""
    if not number:
        return ""
    text = number
    if text.startswith("sip:") or text.startswith("sips:") or "@" in text:
        text = text.split(":", 1)[-1].split("@", 1)[0]
    return "".join(ch for ch in text if ch.isdigit() or ch in "+*#")


def _call_result(event: Ended, confirmed: bool) -> str:
    if confirmed:
        return "confirmed"
    if event.answered:
        return "unconfirmed"
    if event.status == 486 or event.status == 600:
        return "busy"
    if event.status == 487:
        return "cancelled"
    if event.status in (408, 480) or event.by == "timeout":
        return "no_answer"
    return "failed"
