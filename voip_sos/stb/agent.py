"""The reference STB agent core (sans-IO): send one request until it is answered, then follow STATUS.

How this works. `send()` builds a request (fresh 128-bit id, next sequence number) and queues the
first try to the primary backend. Retries follow `RetrySchedule` (250 ms doubling to 4 s, 120 s in
all); the first three tries go to the primary, later ones alternate secondary / primary, so a dead
primary costs under two seconds. Each try is re-stamped with the current (corrected) clock and
re-signed, so the clock window never outlasts a slow network. A valid RECEIPT or REJECT ends the
request; a REJECT `clock` first corrects our clock from the backend's timestamp and resends once.
Replies are believed only when their MAC verifies with our key, they echo our request id and name
our IP. STATUS for our incident is answered with SEEN every time it arrives (our SEEN may be lost),
and reported once.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from voip_sos.errors import LocalProtocolError, RemoteProtocolError
from voip_sos.sos.events import Addr
from voip_sos.sos.retry import GIVE_UP_S, RetrySchedule
from voip_sos.sos.wire import Flag, Message, MsgType, RejectReason, encode, parse
from voip_sos.stb.events import (
    AgentEvent,
    ClockCorrected,
    ReceiptReceived,
    RejectReceived,
    RequestTimedOut,
    StatusReceived,
)

__all__ = ["TRIES_BEFORE_FAILOVER", "AgentState", "StbAgent"]

logger = logging.getLogger(__name__)

TRIES_BEFORE_FAILOVER = 3


class AgentState(enum.Enum):
    IDLE = "idle"
    SENDING = "sending"
    ANSWERED = "answered"
    TIMED_OUT = "timed_out"


_TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    AgentState.IDLE: frozenset({AgentState.SENDING}),
    AgentState.SENDING: frozenset({AgentState.ANSWERED, AgentState.TIMED_OUT}),
    AgentState.ANSWERED: frozenset({AgentState.SENDING}),
    AgentState.TIMED_OUT: frozenset({AgentState.SENDING}),
}


@dataclass(slots=True)
class _Request:
    message: Message
    schedule: RetrySchedule
    started_at: float
    next_at: float
    tries: int = 0
    clock_retried: bool = False
    backends_tried: set[Addr] = field(default_factory=set)


class StbAgent:
    """One STB's side of the protocol. `wall` returns Unix seconds; `now` arguments are monotonic."""

    def __init__(
        self,
        ip: str,
        key: bytes,
        backends: Sequence[Addr],
        wall: Callable[[], float],
        *,
        give_up_s: float = GIVE_UP_S,
        random_id: Callable[[], bytes] = lambda: secrets.token_bytes(16),
        first_seq: int = 1,
    ) -> None:
        if not backends or len(backends) > 2:
            raise LocalProtocolError("an STB agent needs a primary and at most one secondary backend")
        if not key:
            raise LocalProtocolError("an STB agent needs a key")
        self.ip = ip
        self._key = key
        self._backends = tuple(backends)
        self._wall = wall
        self._give_up_s = give_up_s
        self._random_id = random_id
        self.state = AgentState.IDLE
        self.clock_offset_s = 0.0
        self._seq = (first_seq - 1) & 0xFFFFFFFF
        self._req: _Request | None = None
        self.incident_id: int | None = None
        self._status_seen: dict[int, int] = {}
        self._events: deque[AgentEvent] = deque()
        self._out: list[tuple[bytes, Addr]] = []
        self.dropped = 0

    # -- user actions -------------------------------------------------------------------------------

    def send(
        self,
        kind: MsgType,
        now: float,
        *,
        test: bool = False,
        door_code: str | None = None,
        parking_code: str | None = None,
        note: str | None = None,
    ) -> bytes:
        """Queue the first try of a new request; returns its request id."""
        if kind not in (MsgType.SOS, MsgType.CANCEL, MsgType.UPDATE, MsgType.HEARTBEAT):
            raise LocalProtocolError(f"an STB does not send {kind.name} as a request")
        self._set_state(AgentState.SENDING, kind.name)
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        msg = Message(
            kind,
            self._random_id(),
            self._seq,
            0,
            self.ip,
            flags=Flag.TEST if test else Flag.NONE,
            door_code=door_code,
            parking_code=parking_code,
            note=note,
        )
        encode(msg, self._key)  # raise now, not on a retry, if the request cannot be sent
        self._req = _Request(msg, RetrySchedule(now, give_up_s=self._give_up_s), now, now)
        self._try(now)
        return msg.request_id

    # -- adapter surface -----------------------------------------------------------------------------

    def next_event(self) -> AgentEvent | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return self._req.next_at if self._req is not None and self.state is AgentState.SENDING else None

    def handle_timer(self, now: float) -> None:
        req = self._req
        if req is None or self.state is not AgentState.SENDING or now < req.next_at:
            return
        self._try(now)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Take a reply; queues events and SEENs. Anything not provably for us is dropped silently."""
        try:
            msg = parse(data)
        except RemoteProtocolError as exc:
            self._drop(f"unparseable reply from {addr[0]}: {exc}")
            return
        if msg.ip != self.ip or not msg.verify(self._key):
            self._drop(f"{msg.type.name} from {addr[0]} not signed for us")
            return
        if msg.type is MsgType.STATUS:
            self._on_status(msg, addr)
        elif msg.type in (MsgType.RECEIPT, MsgType.REJECT):
            self._on_answer(msg, addr, now)
        else:
            self._drop(f"unexpected {msg.type.name} from {addr[0]}")

    # -- internals ---------------------------------------------------------------------------------------

    def _backend_for(self, attempt: int) -> Addr:
        if len(self._backends) == 1 or attempt <= TRIES_BEFORE_FAILOVER:
            return self._backends[0]
        return self._backends[(attempt - TRIES_BEFORE_FAILOVER) % 2]

    def _try(self, now: float) -> None:
        req = self._req
        assert req is not None
        delay = req.schedule.next_delay(now)
        if delay is None:
            self._set_state(AgentState.TIMED_OUT, "give-up time")
            self._events.append(
                RequestTimedOut(req.message.request_id, req.message.type, req.tries, now - req.started_at)
            )
            return
        req.tries += 1
        backend = self._backend_for(req.tries)
        req.backends_tried.add(backend)
        stamped = _restamp(req.message, self._wall_ms())
        self._out.append((encode(stamped, self._key), backend))
        req.next_at = now + delay

    def _on_answer(self, msg: Message, addr: Addr, now: float) -> None:
        req = self._req
        if req is None or self.state is not AgentState.SENDING or msg.request_id != req.message.request_id:
            self._drop(f"{msg.type.name} for a request not outstanding")
            return
        elapsed = now - req.started_at
        if msg.type is MsgType.RECEIPT:
            assert msg.incident_id is not None
            self._set_state(AgentState.ANSWERED, "RECEIPT")
            if msg.incident_id:
                self.incident_id = msg.incident_id
            self._events.append(
                ReceiptReceived(
                    req.message.request_id, req.message.type, msg.incident_id, req.tries, elapsed, addr
                )
            )
            return
        assert msg.reason is not None
        if msg.reason is RejectReason.CLOCK and not req.clock_retried:
            req.clock_retried = True
            self.clock_offset_s = msg.timestamp_ms / 1000.0 - self._wall()
            self._events.append(ClockCorrected(self.clock_offset_s))
            self._out.append((encode(_restamp(req.message, self._wall_ms()), self._key), addr))
            req.tries += 1
            return
        self._set_state(AgentState.ANSWERED, "REJECT")
        self._events.append(
            RejectReceived(
                req.message.request_id,
                req.message.type,
                msg.reason,
                msg.timestamp_ms,
                req.tries,
                elapsed,
                addr,
            )
        )

    def _on_status(self, msg: Message, addr: Addr) -> None:
        assert msg.incident_id is not None and msg.status is not None
        seen = encode(
            Message(
                MsgType.SEEN, msg.request_id, msg.seq, self._wall_ms(), self.ip, incident_id=msg.incident_id
            ),
            self._key,
        )
        self._out.append((seen, addr))
        if msg.seq > self._status_seen.get(msg.incident_id, 0):
            self._status_seen[msg.incident_id] = msg.seq
            self._events.append(StatusReceived(msg.incident_id, msg.status, msg.seq, msg.detail))

    def _wall_ms(self) -> int:
        return max(0, int((self._wall() + self.clock_offset_s) * 1000))

    def _set_state(self, new: AgentState, why: str) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"cannot go from {self.state.value} to {new.value} on {why}")
        logger.debug(
            "STB agent state", extra={"stb": self.ip, "from": self.state.value, "to": new.value, "on": why}
        )
        self.state = new

    def _drop(self, why: str) -> None:
        self.dropped += 1
        logger.debug("STB agent dropped a datagram", extra={"stb": self.ip, "why": why})


def _restamp(msg: Message, timestamp_ms: int) -> Message:
    return Message(
        msg.type,
        msg.request_id,
        msg.seq,
        timestamp_ms,
        msg.ip,
        flags=msg.flags,
        door_code=msg.door_code,
        parking_code=msg.parking_code,
        note=msg.note,
    )
