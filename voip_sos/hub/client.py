"""STB side of the STB <-> hub protocol (sans-IO): send a request, retransmit until a FINAL reply.

The STB agent sends the INSTRUCTION in parallel with its SOS to the backend and forwards every new
code it learns here to the backend as an SOS UPDATE. Retransmissions follow the SOS protocol's
schedule (voip_sos.sos.retry: 0.25 s doubling to 4 s, docs/sos-protocol.md §9), each re-stamped
and re-signed with the same request id; the hub answers each copy with its latest CODES, so
waiting for a slow lock costs no extra round trips. No time, socket or asyncio here: the adapter
passes `now` (monotonic) and `wall_ms` (wall clock, for the timestamp field only).
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import secrets
from dataclasses import dataclass

from voip_sos.errors import LocalProtocolError, RemoteProtocolError
from voip_sos.hub import wire
from voip_sos.hub.events import (
    Addr,
    CodesReceived,
    DatagramDropped,
    Event,
    RequestTimedOut,
    RevokeConfirmed,
)
from voip_sos.hub.wire import Flag, Message, MsgType
from voip_sos.sos.retry import GIVE_UP_S as SOS_GIVE_UP_S
from voip_sos.sos.retry import RetrySchedule

__all__ = ["GIVE_UP_S", "HubClient"]

log = logging.getLogger(__name__)

# The SOS protocol's give-up time; the hub reports a failed part itself well before (hub.deadline_s).
GIVE_UP_S = SOS_GIVE_UP_S


@dataclass(slots=True)
class _Outstanding:
    msg: Message
    schedule: RetrySchedule
    due_at: float
    last: Message | None = None

    @property
    def give_up_at(self) -> float:
        return self.schedule.give_up_at


class HubClient:
    """Talks to one hub at `hub_addr`, signing with `key`, as the STB whose fixed IP is `stb_ip`."""

    def __init__(
        self, key: bytes, hub_addr: Addr, stb_ip: str, *, seq: int = 0, give_up_s: float = GIVE_UP_S
    ) -> None:
        if not key:
            raise LocalProtocolError("the hub key is empty")
        self._key = key
        self._hub = hub_addr
        self._ip = ipaddress.ip_address(stb_ip).compressed
        self._seq = seq
        self._give_up_s = give_up_s
        self._outstanding: dict[bytes, _Outstanding] = {}
        self._events: collections.deque[Event] = collections.deque()
        self._due: list[bytes] = []

    def instruct(self, now: float, *, test: bool = False, request_id: bytes | None = None) -> bytes:
        """Queue an emergency INSTRUCTION; returns its request id.

        The STB gives its SOS's request id (`request_id`): the hub echoes it in its events to the
        backend, which then knows exactly which incident a code belongs to.
        """
        return self._start(MsgType.INSTRUCTION, Flag.TEST if test else Flag.NONE, now, request_id)

    def revoke(self, now: float) -> bytes:
        """Queue a REVOKE of every temporary code; returns its request id."""
        return self._start(MsgType.REVOKE, Flag.NONE, now)

    def _start(self, mtype: MsgType, flags: Flag, now: float, request_id: bytes | None = None) -> bytes:
        if request_id is not None and (len(request_id) != 16 or request_id in self._outstanding):
            raise LocalProtocolError("a request id is 16 bytes and not one already outstanding")
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        rid = request_id if request_id is not None else secrets.token_bytes(16)
        msg = Message(type=mtype, request_id=rid, seq=self._seq, timestamp_ms=0, ip=self._ip, flags=flags)
        self._outstanding[rid] = _Outstanding(msg, RetrySchedule(now, give_up_s=self._give_up_s), now)
        self._due.append(rid)
        return rid

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Take one datagram from the hub; queue CodesReceived / RevokeConfirmed for new facts."""
        try:
            msg = wire.parse(data)
        except RemoteProtocolError as exc:
            self._events.append(DatagramDropped(addr, str(exc)))
            return
        out = self._outstanding.get(msg.request_id)
        if out is None or msg.type in wire.REQUEST_TYPES or not msg.verify(self._key) or msg.ip != self._ip:
            self._events.append(DatagramDropped(addr, "not a reply to an outstanding request"))
            return
        expected = MsgType.CODES if out.msg.type is MsgType.INSTRUCTION else MsgType.REVOKED
        if msg.type is not expected or msg.seq != out.msg.seq:
            self._events.append(DatagramDropped(addr, f"{msg.type.name} does not answer {out.msg.type.name}"))
            return
        if msg.type is MsgType.REVOKED:
            del self._outstanding[msg.request_id]
            self._events.append(RevokeConfirmed(msg.request_id, msg.cleared or 0, msg.failed or 0))
            return
        fresh = dataclasses.replace(msg, timestamp_ms=0)
        if out.last is not None and out.last == fresh:
            return  # the same answer again (we retransmitted): nothing new
        out.last = fresh
        if msg.final:
            del self._outstanding[msg.request_id]
        assert msg.door_state is not None and msg.parking_state is not None
        self._events.append(
            CodesReceived(
                request_id=msg.request_id,
                door_state=msg.door_state,
                parking_state=msg.parking_state,
                door_code=msg.door_code,
                parking_code=msg.parking_code,
                door_valid_until_ms=msg.door_valid_until,
                parking_valid_until_ms=msg.parking_valid_until,
                final=msg.final,
            )
        )

    def datagrams_to_send(self, now: float, wall_ms: int) -> list[tuple[bytes, Addr]]:
        """Signed datagrams due now (first tries and retransmissions), stamped with `wall_ms`."""
        due, self._due = self._due, []
        out: list[tuple[bytes, Addr]] = []
        for rid in due:
            entry = self._outstanding.get(rid)
            if entry is None:
                continue
            out.append(
                (wire.encode(dataclasses.replace(entry.msg, timestamp_ms=wall_ms), self._key), self._hub)
            )
            delay = entry.schedule.next_delay(now)
            entry.due_at = entry.give_up_at if delay is None else now + delay
        return out

    def get_timer(self) -> float | None:
        """The earliest retransmission or give-up deadline, or None when idle."""
        times = [min(e.due_at, e.give_up_at) for e in self._outstanding.values()]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Queue the retransmissions due at `now`; give up on requests past their deadline."""
        for rid, entry in list(self._outstanding.items()):
            if now >= entry.give_up_at:
                del self._outstanding[rid]
                self._events.append(RequestTimedOut(rid))
            elif now >= entry.due_at and rid not in self._due:
                self._due.append(rid)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    @property
    def busy(self) -> bool:
        return bool(self._outstanding)
