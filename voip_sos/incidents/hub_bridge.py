"""Incidents and the home hubs (F8, F12, F13): context out, codes in, the family's revoke.

`serve` runs one `HubBridge` when `hub_link.broker` is set. It owns the backend's MQTT link
(`voip_sos.hub.link.HubLink`) and:

- **context out**: when an SOS from a home with a hub (directory `hub_id`) is recorded, it pushes
  the incident's context (id, uid, address, first contact) to that hub in a task of its own — the
  SOS path never waits for it; a failure is retried briefly, then logged and recorded on the incident.
- **events in**: every hub event (door_code, parking_pass, failed, revoked, expired) is appended to
  its incident's log (`hub_door_code`, `hub_parking_pass`, `hub_failed`, `hub_revoked`,
  `hub_code_expired`); codes also go to the incident runner as authoritative codes, so the follow-up
  SMS goes out — once, even when the STB's UPDATE repeats them (the incident core recognises that).
- the family page's `Revoker` (backend → MQTT → hub → lock, the confirmed answer) and `CodesSource`
  (the codes recorded for the incident).

Which incident an event belongs to: the STB gives its hub instruction the SOS's own request id, and
the hub echoes it (`request`), so that is the first key; then the incident id the hub got with the
context; then the home's open incident. A code can beat its SOS to the backend (the hub and the
backend are reached in parallel): an event whose request is not known yet waits up to
`EARLY_EVENT_S` for the SOS, and is then placed by the other keys.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from voip_sos.clips.health import log_camera_health
from voip_sos.config import HubLinkConfig
from voip_sos.directory import Directory, Subscriber
from voip_sos.hub.link import HubLink, HubLinkError
from voip_sos.hub.link import RevokeResult as HubRevokeResult
from voip_sos.hub.topics import EventKind, HubEvent, IncidentContext
from voip_sos.incidents.recording import EventRecord, Recorded, RequestRecord
from voip_sos.incidents.store import Incident, IncidentEvent
from voip_sos.web.family import RevokeResult
from voip_sos.web.family_state import HUB_DOOR_CODE, HUB_EXPIRED, HUB_PARKING_PASS, Codes

__all__ = ["LOG_KINDS", "CodesSink", "HubBridge", "HubLinkLike", "open_hub_bridge"]

log = logging.getLogger(__name__)

LOG_KINDS = {
    EventKind.DOOR_CODE: HUB_DOOR_CODE,
    EventKind.PARKING_PASS: HUB_PARKING_PASS,
    EventKind.FAILED: "hub_failed",
    EventKind.REVOKED: "hub_revoked",
    EventKind.EXPIRED: HUB_EXPIRED,
    EventKind.CLIP: "hub_clip",
}
"""Hub event kind -> incident log kind (detail: the hub's payload, plus door_code / parking_code)."""
EARLY_EVENT_S = 5.0
"""A hub event whose SOS is not recorded yet waits this long for it (the SOS path takes ms)."""
CONTEXT_RETRY_S = 10.0
CONTEXT_RETRY_EVERY_S = 1.0
CONTEXT_PUBLISH_S = 5.0
RECONNECT_S = 2.0
MAX_REQUESTS = 10_000
MAX_INCIDENTS = 10_000
"""Incidents whose hub and codes are kept in memory (older ones are read back from the log)."""
MAX_EVENT_BYTES = 4096
MAX_CODE_CHARS = 64
MAX_EARLY_PER_HUB = 100
CODES_DB_CACHE_S = 10.0


class HubLinkLike(Protocol):
    """The part of `HubLink` the bridge uses (a real link in serve, the tests and the benchmark)."""

    async def send_context(self, hub_id: str, context: IncidentContext) -> None: ...

    async def revoke(self, hub_id: str, timeout_s: float = 30.0) -> HubRevokeResult: ...

    def events(self) -> AsyncIterator[HubEvent]: ...


class CodesSink(Protocol):
    """The incident runner's entry for the hub's codes."""

    def hub_codes(self, incident_id: int, door_code: str | None, parking_code: str | None) -> bool: ...


class IncidentLog(Protocol):
    async def get(self, incident_id: int) -> Incident | None: ...

    async def list(self, *, open_only: bool = False, limit: int = 100) -> list[Incident]: ...

    async def events(self, incident_id: int) -> builtins.list[IncidentEvent]: ...

    async def append_events(self, events: Sequence[EventRecord]) -> None: ...


@dataclass(frozen=True, slots=True)
class _Early:
    event: HubEvent
    until: float


def _wall() -> datetime:
    return datetime.now(UTC)


def _when(epoch_s: object) -> datetime | None:
    return datetime.fromtimestamp(epoch_s, UTC) if isinstance(epoch_s, int | float) else None


def context_of(incident_id: int, sub: Subscriber) -> IncidentContext:
    """What the hub needs for the parking pass: uid, address, the first contact's phone."""
    phone = sub.contacts[0].phone if sub.contacts else ""
    return IncidentContext(str(incident_id), sub.uid, sub.address.full(), phone)


class HubBridge:
    """See the module docstring. `start()` after the runner resumed open incidents; `close()` at stop."""

    def __init__(
        self,
        link: HubLinkLike,
        incidents: IncidentLog,
        directory: Directory,
        *,
        revoke_timeout_s: float = 25.0,
        connect: Callable[[], Awaitable[None]] | None = None,
        disconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`connect` runs before the first event is read (the link connecting in the background);
        `disconnect` at `close()`."""
        self._link = link
        self._incidents = incidents
        self._directory = directory
        self._revoke_timeout_s = revoke_timeout_s
        self._connect = connect
        self._disconnect = disconnect
        self.runner: CodesSink | None = None
        self._by_request: OrderedDict[str, int] = OrderedDict()  # SOS request id (hex) -> incident
        self._hub_of: OrderedDict[int, str] = OrderedDict()  # incident -> its home's hub
        self._open: dict[str, int] = {}  # hub -> the home's open incident (not cancelled)
        self._last: dict[str, int] = {}  # hub -> the home's latest incident
        self._early: dict[str, deque[_Early]] = {}
        self._codes: OrderedDict[int, Codes] = OrderedDict()
        self._codes_db: dict[int, tuple[float, Codes | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self.recorded = 0
        """Hub events recorded on incidents (tests, benchmark)."""
        self.clip_grant: Callable[[IncidentContext, str], Awaitable[IncidentContext]] | None = None
        """Adds the camera-clip upload grant to a context (voip_sos/clips/tokens.py `ClipGrants`)."""

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, runner: CodesSink) -> None:
        """Learn the homes of incidents still open (after a restart), then consume hub events."""
        self.runner = runner
        for inc in await self._incidents.list(open_only=True, limit=10_000):
            sub = await self._directory.get(inc.uid)
            if sub is not None and sub.hub_id:
                self._remember(inc.id, sub.hub_id, None, opened=True)
        self._reader = asyncio.create_task(self._consume(), name="hub-bridge")

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._reader] if self._reader is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._disconnect is not None:
            await self._disconnect()

    def _spawn(self, aw: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await aw
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hub bridge task failed")

        task = asyncio.ensure_future(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- SOS side -----------------------------------------------------------------------------

    def on_recorded(self, rec: RequestRecord, res: Recorded) -> None:
        """The SOS listener recorded a request: an SOS from a hub home sends the context (in a task)."""
        if res.incident_id is None or res.again:
            return
        if rec.kind == "sos":
            self._spawn(self._sos(rec, res.incident_id))
        elif rec.kind == "cancel":
            # A false alarm: codes that come later belong to no emergency (the hub is told to revoke
            # by the STB itself); they are still recorded on the incident.
            for hub, inc in list(self._open.items()):
                if inc == res.incident_id:
                    del self._open[hub]

    async def _sos(self, rec: RequestRecord, incident_id: int) -> None:
        sub = rec.subscriber if rec.subscriber is not None and rec.subscriber.uid == rec.uid else None
        if sub is None:
            sub = await self._directory.get(rec.uid)
        if sub is None or not sub.hub_id:
            return
        hub = sub.hub_id
        self._remember(incident_id, hub, rec.request_id.hex(), opened=True)
        self._spawn(self._send_context(hub, context_of(incident_id, sub)))
        early = self._early.pop(hub, None)
        for item in early or ():
            await self._handle(item.event)

    def _remember(self, incident_id: int, hub: str, request: str | None, *, opened: bool) -> None:
        self._hub_of[incident_id] = hub
        while len(self._hub_of) > MAX_INCIDENTS:
            self._hub_of.popitem(last=False)
        self._last[hub] = incident_id
        if opened:
            self._open[hub] = incident_id
        if request is not None:
            self._by_request[request] = incident_id
            while len(self._by_request) > MAX_REQUESTS:
                self._by_request.popitem(last=False)

    async def _send_context(self, hub: str, ctx: IncidentContext) -> None:
        if self.clip_grant is not None:
            try:
                ctx = await self.clip_grant(ctx, hub)
            except Exception:  # no clips uploaded is no reason to withhold the context
                log.exception("clip upload grant not issued", extra={"incident": ctx.incident, "hub": hub})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONTEXT_RETRY_S
        ilog = log.getChild("context")
        while True:
            try:
                async with asyncio.timeout(CONTEXT_PUBLISH_S):
                    await self._link.send_context(hub, ctx)
                ilog.info(
                    "incident context sent to the home hub", extra={"incident": ctx.incident, "hub": hub}
                )
                return
            except (HubLinkError, TimeoutError) as exc:
                error = str(exc) or "broker did not acknowledge in time"
            if loop.time() + CONTEXT_RETRY_EVERY_S > deadline:
                break
            await asyncio.sleep(CONTEXT_RETRY_EVERY_S)
        ilog.error(
            "incident context not sent to the home hub (the hub falls back to home.*)",
            extra={"incident": ctx.incident, "hub": hub, "error": error},
        )
        await self._incidents.append_events(
            [EventRecord(int(ctx.incident), "hub_context_failed", _wall(), {"hub": hub, "error": error})]
        )

    # -- hub side -----------------------------------------------------------------------------

    async def _consume(self) -> None:
        if self._connect is not None:
            await self._connect()
        async for event in self._link.events():
            try:
                await self._handle(event)
                await self._expire_early()
            except Exception:
                log.exception("hub event not handled", extra={"hub": event.hub_id, "kind": event.kind})

    async def _handle(self, event: HubEvent) -> None:
        if event.kind == "status":
            log.info("home hub is %s", event.data.get("state"), extra={"hub": event.hub_id})
            return
        if event.kind == EventKind.CAMERA:
            log_camera_health(event)
            return
        if event.kind not in LOG_KINDS:
            return
        problem = _malformed(event)
        if problem is not None:
            log.warning(
                "hub event refused", extra={"hub": event.hub_id, "kind": event.kind, "problem": problem}
            )
            return
        incident = self._match(event, final=False)
        if incident is None:
            self._keep_early(event)
            return
        await self._record(incident, event)

    def _match(self, event: HubEvent, *, final: bool) -> int | None:
        hub = event.hub_id
        request = event.data.get("request")
        if isinstance(request, str) and request in self._by_request:
            incident = self._by_request[request]
            if self._hub_of.get(incident) == hub:  # the topic (ACL) names the hub, not the payload
                return incident
        if not final and isinstance(request, str) and event.kind != EventKind.EXPIRED:
            return None  # its SOS may not be recorded yet: wait for it (see the module docstring)
        said = event.incident
        if said is not None and said.isdigit() and self._hub_of.get(int(said)) == hub:
            return int(said)
        return self._open.get(hub, self._last.get(hub))

    def _keep_early(self, event: HubEvent) -> None:
        queue = self._early.setdefault(event.hub_id, deque(maxlen=MAX_EARLY_PER_HUB))
        queue.append(_Early(event, asyncio.get_running_loop().time() + EARLY_EVENT_S))
        if self._reader is not None:  # look again once it is due even if no other event comes
            asyncio.get_running_loop().call_later(EARLY_EVENT_S + 0.05, self._spawn_expire)

    def _spawn_expire(self) -> None:
        self._spawn(self._expire_early())

    async def _expire_early(self) -> None:
        now = asyncio.get_running_loop().time()
        for hub, queue in list(self._early.items()):
            while queue and queue[0].until <= now:
                event = queue.popleft().event
                incident = self._match(event, final=True)
                if incident is None:
                    log.warning(
                        "hub event for no known incident, dropped", extra={"hub": hub, "kind": event.kind}
                    )
                else:
                    await self._record(incident, event)
            if not queue:
                self._early.pop(hub, None)

    async def _record(self, incident: int, event: HubEvent) -> None:
        detail: dict[str, Any] = {**event.data, "hub": event.hub_id}
        code = event.data.get("code")
        code = code if isinstance(code, str) else None  # checked by _malformed for code events
        if event.kind == EventKind.DOOR_CODE:
            detail["door_code"] = code
        elif event.kind == EventKind.PARKING_PASS:
            detail["parking_code"] = code
        await self._incidents.append_events([EventRecord(incident, LOG_KINDS[event.kind], _wall(), detail)])
        self.recorded += 1
        where = {"incident": incident, "hub": event.hub_id}
        if event.kind == EventKind.FAILED:
            log.error(
                "home hub reports a failure",
                extra={
                    **where,
                    "what": event.data.get("what"),
                    "reason": event.data.get("reason"),
                    "attempts": event.data.get("attempts"),
                },
            )
            return
        if event.kind not in (EventKind.DOOR_CODE, EventKind.PARKING_PASS) or code is None:
            log.info("home hub event recorded", extra={**where, "kind": event.kind})
            return
        door = code if event.kind == EventKind.DOOR_CODE else None
        parking = code if event.kind == EventKind.PARKING_PASS else None
        old = self._codes.get(incident, Codes())
        until = _when(event.data.get("valid_until"))
        self._codes[incident] = Codes(
            door or old.door_code,
            parking or old.parking_code,
            until if door else old.door_valid_until,
            until if parking else old.parking_valid_until,
        )
        while len(self._codes) > MAX_INCIDENTS:
            self._codes.popitem(last=False)
        log.info(
            "home hub code recorded", extra={**where, "kind": event.kind, "slot": event.data.get("slot")}
        )
        if self._open.get(event.hub_id) != incident:
            return  # cancelled (or not this home's current emergency): recorded, nobody is texted
        if self.runner is None or not self.runner.hub_codes(incident, door, parking):
            log.info("incident not running in this process: code recorded only", extra=where)

    # -- the family page ----------------------------------------------------------------------

    async def _hub_for(self, incident_id: int) -> str | None:
        hub = self._hub_of.get(incident_id)
        if hub is not None:
            return hub
        inc = await self._incidents.get(incident_id)
        sub = await self._directory.get(inc.uid) if inc is not None else None
        return sub.hub_id if sub is not None else None

    async def revoke(self, incident_id: int) -> RevokeResult:
        """Revoker: clear every temporary code of the incident's home hub; the lock's confirmed answer."""
        hub = await self._hub_for(incident_id)
        if hub is None:
            return RevokeResult((), False, "no home hub for this incident")
        try:
            answer = await self._link.revoke(hub, timeout_s=self._revoke_timeout_s)
        except HubLinkError as exc:
            log.error(
                "revoke did not reach the home hub",
                extra={"incident": incident_id, "hub": hub, "error": str(exc)},
            )
            return RevokeResult((), False, str(exc))
        failed = list(answer.failed)
        return RevokeResult(
            answer.cleared, not failed, f"slots {failed} not confirmed cleared" if failed else None
        )

    async def codes(self, incident_id: int) -> Codes | None:
        """CodesSource: the door code and parking pass the hub reported for the incident."""
        if incident_id in self._codes:
            return self._codes[incident_id]
        if incident_id in self._hub_of:
            return None  # every event of an incident known here was recorded through this bridge
        loop = asyncio.get_running_loop()
        cached = self._codes_db.get(incident_id)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        found = codes_from_log(await self._incidents.events(incident_id))
        self._codes_db[incident_id] = (loop.time() + CODES_DB_CACHE_S, found)
        if len(self._codes_db) > MAX_REQUESTS:
            self._codes_db.clear()
        return found


def _malformed(event: HubEvent) -> str | None:
    """Why a hub's event cannot be recorded (the hub is authenticated, but its payload is still input)."""
    if len(json.dumps(event.data, default=str)) > MAX_EVENT_BYTES:
        return f"payload larger than {MAX_EVENT_BYTES} bytes"
    code = event.data.get("code")
    valid = isinstance(code, str) and 0 < len(code) <= MAX_CODE_CHARS and code.isprintable()
    if event.kind in (EventKind.DOOR_CODE, EventKind.PARKING_PASS) and not valid:
        return f"code must be text of 1-{MAX_CODE_CHARS} printable characters, got {code!r:.80}"
    return None


def codes_from_log(events: Sequence[IncidentEvent]) -> Codes | None:
    """The latest hub codes in an incident's log (after a restart, or an incident of another backend)."""
    door = parking = None
    door_until = parking_until = None
    for e in events:
        if e.kind == HUB_DOOR_CODE and e.detail.get("code"):
            door, door_until = str(e.detail["code"]), _when(e.detail.get("valid_until"))
        elif e.kind == HUB_PARKING_PASS and e.detail.get("code"):
            parking, parking_until = str(e.detail["code"]), _when(e.detail.get("valid_until"))
    if door is None and parking is None:
        return None
    return Codes(door, parking, door_until, parking_until)


async def open_hub_bridge(
    cfg: HubLinkConfig, directory: Directory, incidents: IncidentLog
) -> HubBridge | None:
    """The bridge on a `HubLink` to `hub_link.broker` (None when unset). The link connects in the
    background and retries: a broker that is down never stops `serve`, nor an SOS."""
    if cfg.broker is None:
        return None
    link = HubLink(
        cfg.broker,
        username=cfg.username,
        password=cfg.password or None,
        client_id=cfg.client_id,
        ca_file=cfg.ca_file,
    )

    async def connect() -> None:
        while True:
            try:
                await link.__aenter__()
                log.info("hub link connected", extra={"broker": str(cfg.broker)})
                return
            except HubLinkError as exc:
                log.error(
                    "hub link cannot connect, retrying", extra={"broker": str(cfg.broker), "error": str(exc)}
                )
            await asyncio.sleep(RECONNECT_S)

    async def disconnect() -> None:
        await link.__aexit__(None, None, None)

    return HubBridge(
        link,
        incidents,
        directory,
        revoke_timeout_s=cfg.revoke_timeout_s,
        connect=connect,
        disconnect=disconnect,
    )
