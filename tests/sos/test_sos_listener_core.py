"""The listener core on a fake clock: every accept and drop rule, counters, logging, STATUS resends."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from voip_sos.directory.records import Address, Stb, StbMatch, Subscriber
from voip_sos.errors import LocalProtocolError
from voip_sos.sos.events import (
    Addr,
    ReceiptSent,
    RejectSent,
    RequestAuthenticated,
    RequestParsed,
    StatusAbandoned,
    StatusSeen,
    StatusSent,
)
from voip_sos.sos.listener import DROP_REASONS, ListenerSettings, SosListener
from voip_sos.sos.wire import Flag, Message, MsgType, RejectReason, StatusCode, encode, parse

A_IP, B_IP, OPEN_IP = "127.0.1.1", "127.0.1.2", "127.0.1.3"
A_KEY, B_KEY, OP_KEY = b"a" * 32, b"b" * 32, b"o" * 32
WALL0 = 1_764_000_000.0


def match(ip: str, secret: bytes | None) -> StbMatch:
    stb = Stb(ip=ip, secret=secret)
    sub = Subscriber(uid=f"uid-{ip}", name="n", language="en", address=Address("x"), contacts=(), stbs=(stb,))
    return StbMatch(sub, stb)


DIRECTORY = {A_IP: match(A_IP, A_KEY), B_IP: match(B_IP, B_KEY), OPEN_IP: match(OPEN_IP, None)}


@dataclass
class Harness:
    """A listener core with a directory and a recorder standing where the adapter's I/O would be."""

    settings: ListenerSettings = field(default_factory=ListenerSettings)
    wall: float = WALL0
    now: float = 0.0
    incidents: dict[str, int] = field(default_factory=dict)
    open_for_cancel: bool = True
    events: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.core = SosListener(self.settings, lambda: self.wall)

    def send(self, data: bytes, addr: Addr) -> list[tuple[bytes, Addr]]:
        self.core.receive_datagram(data, addr, self.now)
        self.run()
        return self.core.datagrams_to_send(self.now)

    def run(self) -> None:
        while (ev := self.core.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, RequestParsed):
                self.core.lookup_done(ev.ticket, DIRECTORY.get(ev.ip), self.now)
            elif isinstance(ev, RequestAuthenticated):
                if ev.message.type is MsgType.CANCEL and not self.open_for_cancel:
                    self.core.refused(ev.ticket, RejectReason.NO_INCIDENT, self.now)
                    continue
                incident = self.incidents.setdefault(ev.message.ip, len(self.incidents) + 1)
                self.core.recorded(ev.ticket, incident, self.now)


def request(ip: str, key: bytes, kind: MsgType = MsgType.SOS, rid: bytes = b"r" * 16, **kw: object) -> bytes:
    ts = kw.pop("ts", int(WALL0 * 1000))
    return encode(Message(kind, rid, 1, ts, ip, **kw), key)  # type: ignore[arg-type]


def test_sos_is_answered_with_a_signed_receipt_only_after_recording() -> None:
    h = Harness()
    h.core.receive_datagram(request(A_IP, A_KEY), (A_IP, 4000), 0.0)
    ev = h.core.next_event()
    assert isinstance(ev, RequestParsed) and ev.ip == A_IP
    h.core.lookup_done(ev.ticket, DIRECTORY[A_IP], 0.0)
    auth = h.core.next_event()
    assert isinstance(auth, RequestAuthenticated) and auth.match.subscriber.uid == f"uid-{A_IP}"
    assert not auth.operator_key
    assert h.core.datagrams_to_send(0.0) == []  # nothing before the record is durable
    h.core.recorded(auth.ticket, 7, 0.0)
    [(data, addr)] = h.core.datagrams_to_send(0.0)
    reply = parse(data)
    assert addr == (A_IP, 4000) and reply.type is MsgType.RECEIPT and reply.verify(A_KEY)
    assert reply.request_id == b"r" * 16 and reply.incident_id == 7 and reply.ip == A_IP
    assert isinstance(h.core.next_event(), ReceiptSent)


def test_replay_gets_the_same_receipt_and_starts_nothing() -> None:
    h = Harness()
    first = h.send(request(A_IP, A_KEY), (A_IP, 4000))
    n_events = len(h.events)
    again = h.send(request(A_IP, A_KEY), (A_IP, 4000))
    assert again == first and len(h.events) == n_events
    assert h.core.counters["answered_again"] == 1
    # A replay of the request id under another key is a forgery: dropped, nothing sent.
    assert h.send(request(A_IP, B_KEY), (A_IP, 4000)) == []
    assert h.core.counters["bad_mac"] == 1


def test_retransmission_while_in_flight_is_absorbed() -> None:
    h = Harness()
    h.core.receive_datagram(request(A_IP, A_KEY), (A_IP, 4000), 0.0)
    h.core.receive_datagram(request(A_IP, A_KEY), (A_IP, 4000), 0.1)
    assert h.core.counters["in_flight"] == 1 and h.core.pending == 1


@pytest.mark.parametrize(
    ("data", "addr", "reason"),
    [
        (request(A_IP, A_KEY), (B_IP, 4000), "source_mismatch"),
        (request("127.0.9.9", A_KEY), ("127.0.9.9", 4000), "unknown_stb"),
        (request(A_IP, B_KEY), (A_IP, 4000), "bad_mac"),
        (request(A_IP, OP_KEY), (A_IP, 4000), "bad_mac"),  # the operator key is not A's key
        (request(OPEN_IP, OP_KEY), (OPEN_IP, 4000), "no_key"),  # no sos.operator_key configured
        (b"\x01garbage", (A_IP, 4000), "malformed"),
        (b"\x01" * 1300, (A_IP, 4000), "oversize"),
        (
            encode(Message(MsgType.RECEIPT, b"r" * 16, 1, 1, A_IP, incident_id=1), A_KEY),
            (A_IP, 4000),
            "not_a_request",
        ),
    ],
)
def test_drops_are_silent_and_counted(data: bytes, addr: Addr, reason: str) -> None:
    h = Harness()
    assert h.send(data, addr) == []
    assert h.core.counters[reason] == 1
    assert sum(h.core.counters[r] for r in DROP_REASONS) == 1
    assert not any(isinstance(e, RequestAuthenticated) for e in h.events)


def test_operator_key_serves_stbs_without_a_secret() -> None:
    h = Harness(ListenerSettings(operator_key=OP_KEY))
    [(data, _)] = h.send(request(OPEN_IP, OP_KEY), (OPEN_IP, 4000))
    assert parse(data).verify(OP_KEY)
    # ... but never an STB that has its own secret (behind NAT that would let any STB pose as it).
    assert h.send(request(A_IP, OP_KEY, rid=b"s" * 16), (A_IP, 4000)) == []


def test_trust_carried_ip_accepts_a_different_source() -> None:
    h = Harness(ListenerSettings(trust_carried_ip=True))
    [(data, addr)] = h.send(request(A_IP, A_KEY), ("10.9.9.9", 5000))
    assert parse(data).type is MsgType.RECEIPT and addr == ("10.9.9.9", 5000)


def test_clock_window_rejects_stale_requests_with_the_backend_time() -> None:
    h = Harness(ListenerSettings(check_clock=True, clock_window_s=30))
    stale = request(A_IP, A_KEY, ts=int((WALL0 - 31) * 1000))
    [(data, _)] = h.send(stale, (A_IP, 4000))
    reply = parse(data)
    assert reply.type is MsgType.REJECT and reply.reason is RejectReason.CLOCK and reply.verify(A_KEY)
    assert reply.timestamp_ms == int(WALL0 * 1000)
    assert h.core.counters["clock"] == 1
    fresh = request(A_IP, A_KEY, ts=int((WALL0 - 29) * 1000))
    assert parse(h.send(fresh, (A_IP, 4000))[0][0]).type is MsgType.RECEIPT
    # Off (the default): any timestamp is fine.
    assert parse(Harness().send(stale, (A_IP, 4000))[0][0]).type is MsgType.RECEIPT


def test_cancel_without_incident_gets_a_signed_reject() -> None:
    h = Harness(open_for_cancel=False)
    [(data, _)] = h.send(request(A_IP, A_KEY, MsgType.CANCEL), (A_IP, 4000))
    reply = parse(data)
    assert reply.reason is RejectReason.NO_INCIDENT and reply.verify(A_KEY)
    assert h.core.counters["no_incident"] == 1
    assert any(isinstance(e, RejectSent) for e in h.events)


def test_store_failure_sends_nothing_so_the_stb_retries() -> None:
    h = Harness()
    h.core.receive_datagram(request(A_IP, A_KEY), (A_IP, 4000), 0.0)
    ev = h.core.next_event()
    assert isinstance(ev, RequestParsed)
    h.core.lookup_done(ev.ticket, DIRECTORY[A_IP], 0.0)
    auth = h.core.next_event()
    assert isinstance(auth, RequestAuthenticated)
    h.core.record_failed(auth.ticket, 0.0, "OperationalError")
    assert h.core.datagrams_to_send(0.0) == [] and h.core.counters["store_failed"] == 1
    # The retransmission starts afresh.
    assert parse(h.send(request(A_IP, A_KEY), (A_IP, 4000))[0][0]).type is MsgType.RECEIPT


def test_token_bucket_limits_one_source_not_the_others() -> None:
    h = Harness(ListenerSettings(rate_per_s=2, burst=5))
    for _ in range(50):
        h.core.receive_datagram(b"\x01junk", (B_IP, 4000), 0.0)
    assert h.core.counters["malformed"] == 5 and h.core.counters["rate_limited"] == 45
    assert parse(h.send(request(A_IP, A_KEY), (A_IP, 4000))[0][0]).type is MsgType.RECEIPT
    h.now = 1.0  # two tokens back
    for _ in range(3):
        h.core.receive_datagram(b"\x01junk", (B_IP, 4000), 1.0)
    assert h.core.counters["malformed"] == 7 and h.core.counters["rate_limited"] == 46


def test_a_flood_from_a_spoofed_stb_address_does_not_silence_that_stb() -> None:
    h = Harness(ListenerSettings(rate_per_s=1, burst=3))
    assert parse(h.send(request(A_IP, A_KEY, MsgType.HEARTBEAT), (A_IP, 4000))[0][0]).type is MsgType.RECEIPT
    for _ in range(100):  # someone else, sending with A's address
        h.core.receive_datagram(request(A_IP, B_KEY, rid=b"f" * 16), (A_IP, 4001), 0.0)
    assert h.core.counters["rate_limited"] >= 97
    [(data, _)] = h.send(request(A_IP, A_KEY, rid=b"s" * 16), (A_IP, 4000))
    assert parse(data).type is MsgType.RECEIPT and h.core.counters["vouched"] == 1
    # An STB never heard from gets no such pass.
    for _ in range(10):
        h.core.receive_datagram(request(B_IP, A_KEY, rid=b"g" * 16), (B_IP, 4001), 0.0)
    assert h.send(request(B_IP, B_KEY, rid=b"t" * 16), (B_IP, 4000)) == []


def test_requests_in_flight_are_bounded() -> None:
    h = Harness(ListenerSettings(max_pending=2))
    for i in range(3):
        h.core.receive_datagram(request(A_IP, A_KEY, rid=bytes([i]) * 16), (A_IP, 4000), 0.0)
    assert h.core.pending == 2 and h.core.counters["overloaded"] == 1


def test_drops_are_logged_once_per_source_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    caplog.set_level(logging.WARNING, logger="voip_sos.sos.listener")
    for t in (0.0, 1.0, 30.0, 59.0):
        h.core.receive_datagram(b"\x01junk", ("127.0.5.5", 1), t)
    h.core.receive_datagram(b"\x01junk", ("127.0.5.6", 1), 2.0)
    h.core.receive_datagram(b"\x01junk", ("127.0.5.5", 1), 61.0)
    lines = [r for r in caplog.records if r.getMessage() == "SOS datagram refused"]
    assert [r.__dict__["source"] for r in lines] == ["127.0.5.5", "127.0.5.6", "127.0.5.5"]
    assert lines[-1].__dict__["suppressed"] == 3
    assert h.core.counters["malformed"] == 6


def _status_setup() -> tuple[Harness, int]:
    h = Harness()
    h.send(request(A_IP, A_KEY), (A_IP, 4000))
    seq = h.core.send_status(1, A_IP, StatusCode.NOBODY_REACHED, h.now)
    return h, seq


def _seen_for(data: bytes, key: bytes = A_KEY) -> bytes:
    st = parse(data)
    return encode(Message(MsgType.SEEN, st.request_id, st.seq, 0, st.ip, incident_id=st.incident_id), key)


def test_status_is_resent_on_the_schedule_until_seen() -> None:
    h, seq = _status_setup()
    [(data, addr)] = h.core.datagrams_to_send(0.0)
    st = parse(data)
    assert addr == (A_IP, 4000) and st.type is MsgType.STATUS and st.status is StatusCode.NOBODY_REACHED
    assert st.verify(A_KEY) and st.seq == seq == 1
    sends = []
    for _ in range(4):
        t = h.core.get_timer()
        assert t is not None
        h.core.handle_timer(t)
        sends.append(t)
        assert h.core.datagrams_to_send(t) == [(data, addr)]
    assert sends == [0.25, 0.75, 1.75, 3.75]
    assert h.send(_seen_for(data, B_KEY), (A_IP, 4000)) == [] and h.core.get_timer() is not None
    assert h.send(_seen_for(data), (A_IP, 4000)) == []
    assert h.core.get_timer() is None
    assert any(isinstance(e, StatusSeen) and e.status_seq == 1 for e in h.events)


def test_status_gives_up_and_newer_status_replaces_older() -> None:
    h, _ = _status_setup()
    h.core.datagrams_to_send(0.0)
    h.core.send_status(1, A_IP, StatusCode.CALLING, 0.1)
    [(data, _)] = h.core.datagrams_to_send(0.1)
    assert parse(data).seq == 2
    assert len(h.core._outgoing) == 1  # the unseen NOBODY_REACHED is no longer resent
    t = h.core.get_timer()
    while t is not None:
        h.core.handle_timer(t)
        t = h.core.get_timer()
    abandoned = [e for e in iter(h.core.next_event, None) if isinstance(e, StatusAbandoned)]
    assert [(e.status, e.status_seq) for e in abandoned] == [(StatusCode.CALLING, 2)]


def test_status_needs_a_session_and_tickets_must_be_known() -> None:
    h = Harness()
    with pytest.raises(LocalProtocolError, match=r"no session with STB 127\.0\.1\.1"):
        h.core.send_status(1, A_IP, StatusCode.CALLING, 0.0)
    with pytest.raises(LocalProtocolError, match="unknown ticket 99"):
        h.core.lookup_done(99, None, 0.0)
    with pytest.raises(LocalProtocolError, match="not authenticated"):
        h.core.recorded(99, 1, 0.0)


def test_status_events_are_reported() -> None:
    h, _ = _status_setup()
    assert any(isinstance(e, StatusSent) for e in iter(h.core.next_event, None))


def test_test_flag_reaches_the_adapter() -> None:
    h = Harness()
    h.send(request(A_IP, A_KEY, flags=Flag.TEST), (A_IP, 4000))
    auth = next(e for e in h.events if isinstance(e, RequestAuthenticated))
    assert auth.message.test
