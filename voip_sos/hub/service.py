"""The home hub service: instructions in, codes and passes out, revokes, expiry, events upstream.

On an instruction the door code and the parking pass are fetched in parallel; each reports to the
STB the moment it settles (a CODES reply), so a slow parking system never holds back the door code.
Every lock or parking step is retried with backoff until `hub.deadline_s`, then reported as failed
to the STB and the backend. The SOS itself never waits for any of this: the STB sends it to the
backend in parallel (docs/hub-protocol.md §1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from voip_sos.hub.aio import HubEndpoint, open_hub_endpoint
from voip_sos.hub.clip.service import ClipService
from voip_sos.hub.config import HubConfig
from voip_sos.hub.events import Event, InstructionReceived, RevokeRequested
from voip_sos.hub.listener import CodesReply, HubListener
from voip_sos.hub.locks import Lock, LockError, make_lock
from voip_sos.hub.parking import ParkingClient, ParkingError, PassRequest
from voip_sos.hub.slots import CodeState, SlotTable, TempCode
from voip_sos.hub.store import load_state, save_state
from voip_sos.hub.topics import EventKind, IncidentContext
from voip_sos.hub.uplink import Uplink
from voip_sos.hub.wire import PartState
from voip_sos.logs import bind

__all__ = ["HubService", "RevokeOutcome"]

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 4.0
# A code is given out again (instead of a new slot) while at least this share of its TTL remains.
REUSE_MIN_SHARE = 0.5
# Context older than this belongs to an earlier incident.
CONTEXT_FRESH_S = 600.0
EXPIRY_RETRY_S = 30.0
WALL_RECHECK_S = 60.0

T = TypeVar("T")


class StepFailed(Exception):
    """A retried step ran out of time; carries the last error and the number of attempts."""

    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class RevokeOutcome:
    """Which temporary codes a revoke cleared (confirmed by the lock) and which it could not."""

    cleared: tuple[int, ...]
    failed: tuple[int, ...]


@dataclass(slots=True)
class _Part:
    state: PartState
    value: str | None = None
    valid_until: float | None = None


class HubService:
    """Runs one hub: its STB socket, its lock, its parking system and its link to the backend."""

    def __init__(
        self,
        cfg: HubConfig,
        *,
        lock: Lock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        assert cfg.hub.id is not None
        self.cfg = cfg
        self.hub_id = cfg.hub.id
        self._wall = wall
        self.lock: Lock = lock if lock is not None else make_lock(cfg.lock, cfg.hub.id)
        self.parking = ParkingClient(cfg.parking) if cfg.parking.url else None
        self.slots = SlotTable(cfg.lock.slots, cfg.lock.code_length)
        self._state_path = Path(cfg.hub.state_file)
        self.listener = HubListener(bytes.fromhex(cfg.hub.stb_key), stb_ip=cfg.hub.stb_ip)
        self.endpoint: HubEndpoint | None = None
        self.uplink = Uplink(self.hub_id, cfg.link, self._on_command) if cfg.link.broker else None
        # Camera clips (F9): buffers from the start, clips cut and uploaded on a press.
        self.clips: ClipService | None = None
        if cfg.clip.cameras:
            self.clips = ClipService(self.hub_id, cfg.clip, self._publish, wall=wall)
        self._lock_mutex = asyncio.Lock()  # one command at a time on the lock's radio
        # One issue at a time, so presses arriving together share one code instead of taking two slots.
        self._issue_mutex = asyncio.Lock()
        self._generation = 0  # bumped by every revoke; an issue in flight from before gives up
        self._context: tuple[float, IncidentContext] | None = None
        self._context_changed = asyncio.Event()
        self._expiry_wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None
        self.log = bind(log, hub=self.hub_id)
        # Test and benchmark hook: called with (request_id, reply) whenever a CODES reply is queued.
        self.on_codes: Callable[[bytes, CodesReply], None] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        orphans = self.slots.load_json(load_state(self._state_path))
        for code in orphans:
            self.log.warning(
                "slot no longer reserved still holds a temporary code", extra={"slot": code.slot}
            )
        await self.lock.start()
        if self.parking is not None:
            await self.parking.start()
        if self.uplink is not None:
            self.uplink.start()
        if self.clips is not None:
            await self.clips.start()
        listen = self.cfg.hub.listen
        self.endpoint = await open_hub_endpoint(
            self.listener, self._on_datagram_event, listen.host, listen.port
        )
        self._expiry = asyncio.create_task(self._expiry_loop(), name="hub-expiry")
        for code in orphans:
            self._spawn(self._clear_orphan(code))
        self.log.info(
            "hub started",
            extra={"listen": str(listen), "codes": len(self.slots.codes()), "lock": self.cfg.lock.kind},
        )

    async def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
        tasks = [*self._tasks, *([self._expiry] if self._expiry else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.clips is not None:
            await self.clips.close()
        if self.uplink is not None:
            await self.uplink.close()
        if self.parking is not None:
            await self.parking.close()
        await self.lock.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("hub task failed", exc_info=task.exception())

    def _save(self) -> None:
        save_state(self._state_path, self.slots.to_json())
        self._expiry_wake.set()

    def _event(self, kind: str, **data: object) -> None:
        self._publish(kind, data)

    def _publish(self, kind: str, data: dict[str, object]) -> None:
        if self.uplink is not None:
            self.uplink.publish_event(kind, data)

    # -- inputs -------------------------------------------------------------------------------

    def _on_datagram_event(self, event: Event) -> None:
        if isinstance(event, InstructionReceived):
            if self.clips is not None:
                self.clips.on_press()
            self._spawn(self._handle_instruction(event))
        elif isinstance(event, RevokeRequested):
            self._spawn(self._handle_stb_revoke(event.request_id))

    async def _on_command(self, command: str, payload: bytes) -> None:
        if command == "context":
            try:
                ctx = IncidentContext.from_json(payload)
            except ValueError as exc:
                self.log.warning("bad incident context from backend", extra={"error": str(exc)})
                return
            self._context = (self._wall(), ctx)
            self._context_changed.set()
            self.log.info("incident context received", extra={"incident": ctx.incident})
            if self.clips is not None:
                self.clips.on_context(ctx)
        elif command == "revoke":
            try:
                command_id = str(json.loads(payload).get("command", ""))
            except (ValueError, AttributeError):
                command_id = ""
            self._spawn(self._handle_backend_revoke(command_id))
        else:
            self.log.warning("unknown backend command", extra={"command": command})

    # -- instruction --------------------------------------------------------------------------

    async def _handle_instruction(self, event: InstructionReceived) -> None:
        rid = event.request_id
        ilog = self.log.bind(request=rid.hex())
        ilog.info("emergency instruction", extra={"test": event.test})
        door = _Part(PartState.PENDING if self.cfg.lock.kind != "none" else PartState.NOT_CONFIGURED)
        park = _Part(PartState.PENDING if self.parking is not None else PartState.NOT_CONFIGURED)

        def report() -> None:
            reply = CodesReply(
                door_state=door.state,
                parking_state=park.state,
                door_code=door.value,
                parking_code=park.value,
                door_valid_until_ms=None if door.valid_until is None else int(door.valid_until * 1000),
                parking_valid_until_ms=None if park.valid_until is None else int(park.valid_until * 1000),
            )
            self.listener.reply_codes(rid, reply, asyncio.get_running_loop().time())
            if self.endpoint is not None:
                self.endpoint.flush()
            if self.on_codes is not None:
                self.on_codes(rid, reply)

        async def door_part() -> None:
            if door.state is PartState.PENDING:
                async with self._issue_mutex:
                    code = await self._issue_door_code(rid.hex())
                if code is None:
                    door.state = PartState.FAILED
                else:
                    door.state, door.value, door.valid_until = PartState.ISSUED, code.code, code.expires_at
                report()

        async def parking_part() -> None:
            if park.state is PartState.PENDING:
                result = await self._issue_parking_pass(rid.hex())
                if result is None:
                    park.state = PartState.FAILED
                else:
                    park.state, park.value, park.valid_until = PartState.ISSUED, result[0], result[1]
                report()

        await asyncio.gather(door_part(), parking_part())
        if door.state is PartState.NOT_CONFIGURED and park.state is PartState.NOT_CONFIGURED:
            report()

    async def _retry(self, what: str, attempt: Callable[[float], Awaitable[T]], per_attempt_s: float) -> T:
        """Run `attempt(timeout_s)` until it succeeds or `hub.deadline_s` passes (then StepFailed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.hub.deadline_s
        backoff = FIRST_BACKOFF_S
        attempts = 0
        reason = "no attempt"
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StepFailed(reason, attempts)
            attempts += 1
            try:
                return await attempt(min(per_attempt_s, remaining))
            except (LockError, ParkingError) as exc:
                reason = str(exc)
                self.log.warning(
                    "step failed, retrying", extra={"what": what, "attempt": attempts, "error": reason}
                )
            await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _issue_door_code(self, request: str) -> TempCode | None:
        now = self._wall()
        reuse = self.slots.current(now, self.cfg.hub.code_ttl_s * REUSE_MIN_SHARE)
        if reuse is not None:
            self.log.info("active door code given again", extra={"slot": reuse.slot, "request": request})
            self._event(EventKind.DOOR_CODE, **_door_event(reuse, request, self._incident(), reused=True))
            return reuse
        code = self.slots.allocate(now, self.cfg.hub.code_ttl_s, request)
        if code is None:
            self.log.error("no free reserved lock slot", extra={"slots": list(self.slots.slots)})
            self._event(
                EventKind.FAILED,
                what="door_code",
                request=request,
                reason="no free reserved slot",
                attempts=0,
            )
            return None
        self._save()  # write-ahead: a restart from here on still clears this slot at expiry
        generation = self._generation

        async def attempt(timeout_s: float) -> None:
            if generation != self._generation:
                raise StepFailed("revoked while being set", 0)
            async with self._lock_mutex:
                await self.lock.set_code(code.slot, code.code, timeout_s)

        try:
            await self._retry(f"set slot {code.slot}", attempt, self.cfg.lock.attempt_timeout_s)
        except StepFailed as exc:
            if self.slots.get(code.slot) is not None:
                # It may still land on the lock later: clear it as soon as the lock answers.
                self.slots.mark(code.slot, CodeState.FAILED, clear_at=self._wall())
                self._save()
            self.log.error(
                "door code failed", extra={"slot": code.slot, "error": exc.reason, "attempts": exc.attempts}
            )
            self._event(
                EventKind.FAILED,
                what="door_code",
                request=request,
                incident=self._incident(),
                reason=exc.reason,
                attempts=exc.attempts,
            )
            return None
        if generation != self._generation or self.slots.get(code.slot) is None:
            # Set, but a revoke ran meanwhile and cleared the slot after it: this code is gone.
            self._event(EventKind.FAILED, what="door_code", request=request, reason="revoked", attempts=0)
            return None
        active = self.slots.mark(code.slot, CodeState.ACTIVE)
        self._save()
        self.log.info("door code confirmed by the lock", extra={"slot": code.slot, "request": request})
        self._event(EventKind.DOOR_CODE, **_door_event(active, request, self._incident(), reused=False))
        return active

    def _incident(self) -> str | None:
        if self._context is None or self._wall() - self._context[0] > CONTEXT_FRESH_S:
            return None
        return self._context[1].incident

    async def _context_for_parking(self) -> tuple[str | None, str, str, str] | None:
        """(incident, uid, address, phone): the backend's fresh context, else `home.*` after a wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.parking.context_wait_s
        while self._incident() is None and loop.time() < deadline:
            self._context_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._context_changed.wait()
        if self._incident() is not None and self._context is not None:
            ctx = self._context[1]
            return ctx.incident, ctx.uid, ctx.address, ctx.contact_phone
        home = self.cfg.home
        if home.uid and home.address and home.contact_phone:
            self.log.info("no incident context from the backend, using home.*")
            return None, home.uid, home.address, home.contact_phone
        return None

    async def _issue_parking_pass(self, request: str) -> tuple[str, float] | None:
        assert self.parking is not None
        parking = self.parking
        facts = await self._context_for_parking()
        if facts is None:
            self._event(
                EventKind.FAILED,
                what="parking_pass",
                request=request,
                reason="no subscriber context",
                attempts=0,
            )
            return None
        incident, uid, address, phone = facts
        now = self._wall()
        req = PassRequest(uid, address, phone, now, now + self.cfg.parking.validity_s, request)
        try:
            granted = await self._retry("parking pass", lambda t: parking.request_pass(req, t), 10.0)
        except StepFailed as exc:
            self.log.error("parking pass failed", extra={"error": exc.reason, "attempts": exc.attempts})
            self._event(
                EventKind.FAILED,
                what="parking_pass",
                request=request,
                incident=incident,
                reason=exc.reason,
                attempts=exc.attempts,
            )
            return None
        self.log.info("parking pass granted", extra={"request": request})
        self._event(
            EventKind.PARKING_PASS,
            request=request,
            incident=incident,
            code=granted.code,
            valid_until=granted.valid_until,
        )
        return granted.code, granted.valid_until

    # -- revoke -------------------------------------------------------------------------------

    async def revoke(self) -> RevokeOutcome:
        """Clear every temporary code (never a slot outside `lock.slots`); confirmed slots leave the table."""
        self._generation += 1
        cleared: list[int] = []
        failed: list[int] = []

        async def clear(code: TempCode) -> None:
            async def attempt(timeout_s: float) -> None:
                async with self._lock_mutex:
                    await self.lock.clear_code(code.slot, timeout_s)

            try:
                await self._retry(f"clear slot {code.slot}", attempt, self.cfg.lock.attempt_timeout_s)
            except StepFailed as exc:
                self.log.error(
                    "revoke: slot not confirmed cleared", extra={"slot": code.slot, "error": exc.reason}
                )
                self.slots.mark(code.slot, code.state, clear_at=self._wall() + EXPIRY_RETRY_S)
                failed.append(code.slot)
                return
            self.slots.remove(code.slot)
            cleared.append(code.slot)

        await asyncio.gather(*(clear(c) for c in self.slots.codes()))
        self._save()
        self.log.info("revoked temporary codes", extra={"cleared": sorted(cleared), "failed": sorted(failed)})
        return RevokeOutcome(tuple(sorted(cleared)), tuple(sorted(failed)))

    async def _handle_backend_revoke(self, command_id: str) -> None:
        outcome = await self.revoke()
        self._event(
            EventKind.REVOKED,
            command=command_id,
            source="backend",
            cleared=list(outcome.cleared),
            failed=list(outcome.failed),
        )

    async def _handle_stb_revoke(self, request_id: bytes) -> None:
        outcome = await self.revoke()
        self.listener.reply_revoked(
            request_id, len(outcome.cleared), len(outcome.failed), asyncio.get_running_loop().time()
        )
        if self.endpoint is not None:
            self.endpoint.flush()
        self._event(
            EventKind.REVOKED,
            command=request_id.hex(),
            source="stb",
            cleared=list(outcome.cleared),
            failed=list(outcome.failed),
        )

    # -- expiry -------------------------------------------------------------------------------

    async def _expiry_loop(self) -> None:
        """Clear codes when their time comes (also codes a previous run of the hub left behind)."""
        while True:
            self._expiry_wake.clear()
            due_at = self.slots.next_due()
            if due_at is not None and due_at <= self._wall():
                try:
                    await self._clear_due()
                except Exception:  # a full disk must not end expiry for good: log, pause, go on
                    self.log.exception("expiry pass failed")
                    await asyncio.sleep(EXPIRY_RETRY_S)
                continue
            # Look again at least once a minute: the wall clock may be stepped (NTP) under us.
            timeout = WALL_RECHECK_S if due_at is None else min(WALL_RECHECK_S, due_at - self._wall())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._expiry_wake.wait()

    async def _clear_due(self) -> None:
        for code in self.slots.due(self._wall()):
            try:
                async with self._lock_mutex:
                    await self.lock.clear_code(code.slot, self.cfg.lock.attempt_timeout_s)
            except LockError as exc:
                self.log.warning("expired code not cleared yet", extra={"slot": code.slot, "error": str(exc)})
                self.slots.mark(
                    code.slot,
                    code.state,
                    clear_at=self._wall() + min(EXPIRY_RETRY_S, self.cfg.hub.deadline_s),
                )
                self._event(EventKind.FAILED, what="expiry", slot=code.slot, reason=str(exc), attempts=1)
                continue
            if self.slots.get(code.slot) == code:
                self.slots.remove(code.slot)
            self.log.info("expired door code cleared", extra={"slot": code.slot})
            self._event(EventKind.EXPIRED, slot=code.slot, request=code.request)
        self._save()

    async def _clear_orphan(self, code: TempCode) -> None:
        async def attempt(timeout_s: float) -> None:
            async with self._lock_mutex:
                await self.lock.clear_code(code.slot, timeout_s)

        with contextlib.suppress(StepFailed):
            await self._retry(f"clear orphan slot {code.slot}", attempt, self.cfg.lock.attempt_timeout_s)


def _door_event(code: TempCode, request: str, incident: str | None, *, reused: bool) -> dict[str, object]:
    return {
        "request": request,
        "incident": incident,
        "code": code.code,
        "slot": code.slot,
        "valid_until": code.expires_at,
        "confirmed": True,
        "reused": reused,
    }
