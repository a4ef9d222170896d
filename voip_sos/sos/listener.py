"""The backend's SOS listener core (sans-IO): which datagrams are accepted, answered, or dropped.

How this works. `receive_datagram()` runs the cheap checks in the order docs/sos-protocol.md §5 gives
(rate, size, parse, carried IP = UDP source) and hands the adapter a `RequestParsed`; the adapter
looks the STB up and calls `lookup_done()`, which verifies the HMAC with the key the STB may hold
and applies the clock window, then hands out `RequestAuthenticated`; the adapter records the request
durably and only then calls `recorded()`, which queues the RECEIPT. Anything that fails before the
HMAC verifies is dropped silently (a reply would tell a prober which addresses are subscribers);
after it, a refusal is a signed REJECT. Nothing a sender does raises out of this class: each drop is
counted by reason and logged at most once per source per minute. Per-source token buckets and a
bound on requests in flight keep one sender from slowing the others.

STATUS messages are resent on the STB agent's schedule until the STB answers SEEN.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from voip_sos.directory.records import StbMatch
from voip_sos.errors import LocalProtocolError, RemoteProtocolError
from voip_sos.sos.events import (
    Addr,
    Event,
    ReceiptSent,
    RejectSent,
    RequestAuthenticated,
    RequestParsed,
    StatusAbandoned,
    StatusSeen,
    StatusSent,
)
from voip_sos.sos.limits import LogThrottle, TokenBuckets
from voip_sos.sos.retry import RetrySchedule
from voip_sos.sos.wire import (
    MAX_DATAGRAM_BYTES,
    REQUEST_TYPES,
    Message,
    MsgType,
    RejectReason,
    StatusCode,
    encode,
    parse,
)

__all__ = ["DROP_REASONS", "ListenerSettings", "SosListener"]

logger = logging.getLogger(__name__)

# Every reason a datagram is dropped or refused; counters start at zero for each so dashboards and
# tests see the full set.
DROP_REASONS = (
    "rate_limited",
    "oversize",
    "malformed",
    "not_a_request",
    "source_mismatch",
    "in_flight",
    "overloaded",
    "unknown_stb",
    "no_key",
    "bad_mac",
    "clock",
    "no_incident",
    "unknown_status",
    "store_failed",
)


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """What the listener accepts; filled from the `sos.*` configuration keys."""

    trust_carried_ip: bool = False
    operator_key: bytes | None = field(default=None, repr=False)
    check_clock: bool = False
    clock_window_s: float = 60.0
    rate_per_s: float = 10.0
    burst: int = 20
    max_pending: int = 4096
    max_sources: int = 100_000
    receipt_cache: int = 100_000
    status_give_up_s: float = 600.0


@dataclass(slots=True)
class _Pending:
    message: Message
    source: Addr
    received_wall: float
    received: float
    key: bytes = b""


@dataclass(slots=True)
class _Answered:
    ip: str
    key: bytes
    reply: bytes


@dataclass(slots=True)
class _Outgoing:
    incident_id: int
    ip: str
    addr: Addr
    key: bytes
    status: StatusCode
    seq: int
    data: bytes
    schedule: RetrySchedule
    next_at: float


def source_ip(addr: Addr) -> str:
    """The UDP source address in the directory's normal form (IPv4-mapped IPv6 shown as IPv4)."""
    ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.compressed
    return ip.compressed


class SosListener:
    """Sans-IO core of the SOS listener. `wall` returns Unix seconds (for timestamps and audit)."""

    def __init__(self, settings: ListenerSettings, wall: Callable[[], float]) -> None:
        self.settings = settings
        self._wall = wall
        self.counters: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
        self._buckets = TokenBuckets(settings.rate_per_s, settings.burst, settings.max_sources)
        self._log_throttle = LogThrottle(settings.max_sources)
        self._pending: dict[int, _Pending] = {}
        self._in_flight: dict[bytes, int] = {}
        self._answered: OrderedDict[bytes, _Answered] = OrderedDict()
        self._sessions: OrderedDict[str, tuple[bytes, Addr]] = OrderedDict()
        self._status_seq: OrderedDict[int, int] = OrderedDict()
        self._outgoing: dict[bytes, _Outgoing] = {}
        self._latest_status: dict[int, bytes] = {}
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Addr]] = []
        self._next_ticket = 1

    # -- adapter surface -----------------------------------------------------------------------

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return min((o.next_at for o in self._outgoing.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for sid, out in list(self._outgoing.items()):
            if out.next_at > now:
                continue
            delay = out.schedule.next_delay(now)
            if delay is None:
                del self._outgoing[sid]
                self._forget_latest(out.incident_id, sid)
                self._events.append(StatusAbandoned(out.incident_id, out.ip, out.status, out.seq))
                logger.warning(
                    "STATUS never seen",
                    extra={"incident": out.incident_id, "stb": out.ip, "status": out.status.name},
                )
                continue
            self._out.append((out.data, out.addr))
            out.next_at = now + delay

    @property
    def pending(self) -> int:
        """Requests between arrival and their answer (looked up or being recorded)."""
        return len(self._pending)

    # -- step 1: the cheap checks ------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Check a datagram; queues a `RequestParsed`, a resent RECEIPT, or nothing (counted drop)."""
        try:
            src = source_ip(addr)
        except ValueError:
            self._drop("malformed", addr[0], now, "unparseable source address")
            return
        if not self._buckets.take(src, now) and not self._vouched(data, src):
            self.counters["rate_limited"] += 1  # not logged per datagram: a flood would flood the log
            self._log_drop("rate_limited", src, now, "")
            return
        if len(data) > MAX_DATAGRAM_BYTES:
            self._drop("oversize", src, now, f"{len(data)} bytes")
            return
        try:
            msg = parse(data)
        except RemoteProtocolError as exc:
            self._drop("malformed", src, now, str(exc))
            return
        if not self.settings.trust_carried_ip and msg.ip != src:
            self._drop("source_mismatch", src, now, f"carried {msg.ip}")
            return
        if msg.type is MsgType.SEEN:
            self._on_seen(msg, src, now)
            return
        if msg.type not in REQUEST_TYPES:
            self._drop("not_a_request", src, now, msg.type.name)
            return
        done = self._answered.get(msg.request_id)
        if done is not None:
            # A retransmission (its RECEIPT was lost) or a replay: the same RECEIPT again, nothing starts.
            if done.ip != msg.ip or not msg.verify(done.key):
                self._drop("bad_mac", src, now, "replayed request id with wrong key")
                return
            self._answered.move_to_end(msg.request_id)
            self._out.append((done.reply, addr))
            self.counters["answered_again"] += 1
            return
        if msg.request_id in self._in_flight:
            self.counters["in_flight"] += 1  # its answer is coming; the STB will retransmit if lost
            return
        if len(self._pending) >= self.settings.max_pending:
            self._drop("overloaded", src, now, f"{len(self._pending)} requests in flight")
            return
        ticket = self._next_ticket
        self._next_ticket += 1
        self._pending[ticket] = _Pending(msg, addr, self._wall(), now)
        self._in_flight[msg.request_id] = ticket
        self._events.append(RequestParsed(ticket, msg.ip))

    def _vouched(self, data: bytes, src: str) -> bool:
        """Past an empty bucket: is this a request from an STB we already hold the key of?

        Someone flooding with an STB's (spoofed) address must not silence that STB: when we have
        heard from it before, a datagram that verifies with its key is let through. This costs a
        parse and an HMAC per flood datagram — microseconds, and no database.
        """
        if len(data) > MAX_DATAGRAM_BYTES:
            return False
        try:
            msg = parse(data)
        except RemoteProtocolError:
            return False
        session = self._sessions.get(msg.ip)
        if session is None or (not self.settings.trust_carried_ip and msg.ip != src):
            return False
        if msg.type not in REQUEST_TYPES and msg.type is not MsgType.SEEN:
            return False
        if msg.verify(session[0]):
            self.counters["vouched"] += 1
            return True
        return False

    # -- step 2: authenticate ---------------------------------------------------------------------

    def lookup_done(self, ticket: int, match: StbMatch | None, now: float) -> None:
        """Give the directory's answer for a `RequestParsed`; queues `RequestAuthenticated` or a reply."""
        p = self._pending.get(ticket)
        if p is None:
            raise LocalProtocolError(f"lookup_done for unknown ticket {ticket}")
        msg, src = p.message, source_ip(p.source)
        if match is None:
            self._finish(ticket)
            self._drop("unknown_stb", src, now, f"carried {msg.ip}")
            return
        # The STB's own secret when it has one; the operator-wide key only for STBs without one.
        key = match.stb.secret or self.settings.operator_key
        if not key:
            self._finish(ticket)
            self._drop("no_key", src, now, f"STB {msg.ip} has no secret and sos.operator_key is unset")
            return
        if not msg.verify(key):
            self._finish(ticket)
            self._drop("bad_mac", src, now, f"carried {msg.ip}")
            return
        p.key = key
        self._sessions[msg.ip] = (key, p.source)
        self._sessions.move_to_end(msg.ip)
        while len(self._sessions) > self.settings.max_sources:
            self._sessions.popitem(last=False)
        if self.settings.check_clock:
            skew_s = abs(self._wall() - msg.timestamp_ms / 1000.0)
            if skew_s > self.settings.clock_window_s:
                self._drop("clock", src, now, f"STB clock off by {skew_s:.1f} s")
                self._reject(ticket, RejectReason.CLOCK)
                return
        self._events.append(
            RequestAuthenticated(ticket, msg, match, not match.stb.secret, p.source, p.received_wall)
        )

    # -- step 3: the adapter recorded it ----------------------------------------------------------

    def recorded(self, ticket: int, incident_id: int, now: float, *, again: bool = False) -> None:
        """The request is durably recorded (`again`: it had been before); queues the RECEIPT."""
        p = self._pending.get(ticket)
        if p is None or not p.key:
            raise LocalProtocolError(f"recorded() for ticket {ticket} that was not authenticated")
        msg = p.message
        reply = encode(
            Message(
                MsgType.RECEIPT,
                msg.request_id,
                msg.seq,
                self._wall_ms(),
                msg.ip,
                incident_id=incident_id,
            ),
            p.key,
        )
        self._finish(ticket)
        self._answered[msg.request_id] = _Answered(msg.ip, p.key, reply)
        while len(self._answered) > self.settings.receipt_cache:
            self._answered.popitem(last=False)
        self._out.append((reply, p.source))
        self._events.append(
            ReceiptSent(msg.request_id, incident_id, msg.ip, msg.type, again, max(0.0, now - p.received))
        )

    def refused(self, ticket: int, reason: RejectReason, now: float) -> None:
        """The request cannot be carried out (e.g. CANCEL without an open incident); queues a REJECT."""
        p = self._pending.get(ticket)
        if p is None or not p.key:
            raise LocalProtocolError(f"refused() for ticket {ticket} that was not authenticated")
        self._drop(reason.name.lower(), source_ip(p.source), now, p.message.type.name)
        self._reject(ticket, reason)

    def record_failed(self, ticket: int, now: float, why: str) -> None:
        """Recording failed (database down): no reply, so the STB retries and fails over."""
        p = self._pending.get(ticket)
        if p is None:
            raise LocalProtocolError(f"record_failed() for unknown ticket {ticket}")
        self._finish(ticket)
        self._drop("store_failed", source_ip(p.source), now, why)

    # -- STATUS ---------------------------------------------------------------------------------------

    def send_status(
        self, incident_id: int, ip: str, status: StatusCode, now: float, detail: str | None = None
    ) -> int:
        """Queue a STATUS to the STB (resent until SEEN); returns its number within the incident.

        Raises LocalProtocolError when this listener has not heard from the STB (no key or address).
        A newer STATUS for the same incident replaces an unseen older one.
        """
        session = self._sessions.get(ip)
        if session is None:
            raise LocalProtocolError(f"no session with STB {ip} to send STATUS to")
        key, addr = session
        seq = self._status_seq.get(incident_id, 0) + 1
        self._status_seq[incident_id] = seq
        self._status_seq.move_to_end(incident_id)
        while len(self._status_seq) > self.settings.max_sources:
            self._status_seq.popitem(last=False)
        sid = secrets.token_bytes(16)
        msg = Message(
            MsgType.STATUS,
            sid,
            seq,
            self._wall_ms(),
            ip,
            incident_id=incident_id,
            status=status,
            detail=detail,
        )
        data = encode(msg, key)
        old = self._latest_status.pop(incident_id, None)
        if old is not None:
            self._outgoing.pop(old, None)
        schedule = RetrySchedule(now, give_up_s=self.settings.status_give_up_s)
        delay = schedule.next_delay(now)
        assert delay is not None
        self._outgoing[sid] = _Outgoing(incident_id, ip, addr, key, status, seq, data, schedule, now + delay)
        self._latest_status[incident_id] = sid
        self._out.append((data, addr))
        self._events.append(StatusSent(incident_id, ip, status, seq))
        return seq

    def _on_seen(self, msg: Message, src: str, now: float) -> None:
        out = self._outgoing.get(msg.request_id)
        if out is None:
            # Already seen (a SEEN retransmitted) or unknown: nothing to do, and no reply either way.
            self.counters["unknown_status"] += 1
            return
        if (
            msg.ip != out.ip
            or msg.incident_id != out.incident_id
            or msg.seq != out.seq
            or not msg.verify(out.key)
        ):
            self._drop("bad_mac", src, now, "SEEN does not match its STATUS")
            return
        del self._outgoing[msg.request_id]
        self._forget_latest(out.incident_id, msg.request_id)
        self._events.append(StatusSeen(out.incident_id, out.ip, out.status, out.seq))

    def _forget_latest(self, incident_id: int, sid: bytes) -> None:
        if self._latest_status.get(incident_id) == sid:
            del self._latest_status[incident_id]

    # -- helpers ------------------------------------------------------------------------------------

    def _wall_ms(self) -> int:
        return int(self._wall() * 1000)

    def _reject(self, ticket: int, reason: RejectReason) -> None:
        p = self._pending[ticket]
        msg = p.message
        reply = encode(
            Message(MsgType.REJECT, msg.request_id, msg.seq, self._wall_ms(), msg.ip, reason=reason), p.key
        )
        self._finish(ticket)
        self._out.append((reply, p.source))
        self._events.append(RejectSent(msg.request_id, msg.ip, reason))

    def _finish(self, ticket: int) -> None:
        p = self._pending.pop(ticket)
        self._in_flight.pop(p.message.request_id, None)

    def _drop(self, reason: str, src: str, now: float, detail: str) -> None:
        self.counters[reason] += 1
        self._log_drop(reason, src, now, detail)

    def _log_drop(self, reason: str, src: str, now: float, detail: str) -> None:
        suppressed = self._log_throttle.check(src, now)
        if suppressed is not None:
            logger.warning(
                "SOS datagram refused",
                extra={"source": src, "reason": reason, "detail": detail, "suppressed": suppressed},
            )
