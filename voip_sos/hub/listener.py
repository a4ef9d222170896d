"""Hub side of the STB <-> hub protocol (sans-IO): authenticate requests, deduplicate, answer.

How this works: the STB retransmits a request until it has a FINAL reply (docs/hub-protocol.md §5).
The hub acts on the first copy only (InstructionReceived / RevokeRequested) and keeps, per request
id, the latest reply it produced; every retransmission is answered with that reply (a PENDING CODES
until there is something to say), so a lost reply costs one retransmission interval and the hub
never has to retransmit on its own. Replies the hub produces later (`reply_codes`) are sent at once
to the address of the request. No time, socket or asyncio here: the adapter passes `now`.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
from dataclasses import dataclass

from voip_sos.errors import RemoteProtocolError
from voip_sos.hub import wire
from voip_sos.hub.events import Addr, DatagramDropped, Event, InstructionReceived, RevokeRequested
from voip_sos.hub.wire import Flag, Message, MsgType, PartState

__all__ = ["CodesReply", "HubListener"]

log = logging.getLogger(__name__)

# How long a request id is remembered: longer than any STB keeps retransmitting (120 s).
REMEMBER_S = 600.0
MAX_REMEMBERED = 1024


@dataclass(frozen=True, slots=True)
class CodesReply:
    """What the hub has to say about one instruction (the CODES fields)."""

    door_state: PartState
    parking_state: PartState
    door_code: str | None = None
    parking_code: str | None = None
    door_valid_until_ms: int | None = None
    parking_valid_until_ms: int | None = None

    @property
    def final(self) -> bool:
        return PartState.PENDING not in (self.door_state, self.parking_state)


@dataclass(slots=True)
class _Request:
    request: Message
    addr: Addr
    seen_at: float
    reply: Message | None = None


class HubListener:
    """Authenticates STB requests with `key`; optionally only from `stb_ip` (the STB's fixed IP)."""

    def __init__(self, key: bytes, *, stb_ip: str | None = None) -> None:
        self._key = key
        self._stb_ip = ipaddress.ip_address(stb_ip).compressed if stb_ip else None
        self._requests: collections.OrderedDict[bytes, _Request] = collections.OrderedDict()
        self._events: collections.deque[Event] = collections.deque()
        self._out: list[tuple[Message, Addr]] = []
        self.dropped = 0

    # -- input --------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Parse and authenticate one datagram; queue an event and/or a reply."""
        self._forget(now)
        try:
            msg = wire.parse(data)
        except RemoteProtocolError as exc:
            self._drop(addr, str(exc))
            return
        if msg.type not in wire.REQUEST_TYPES:
            self._drop(addr, f"{msg.type.name} is not a request")
            return
        if not msg.verify(self._key):
            self._drop(addr, "bad mac")
            return
        source = ipaddress.ip_address(addr[0])
        source_ip = (getattr(source, "ipv4_mapped", None) or source).compressed
        if msg.ip != source_ip:
            self._drop(addr, f"carried IP {msg.ip} does not match source {source_ip}")
            return
        if self._stb_ip is not None and msg.ip != self._stb_ip:
            self._drop(addr, f"carried IP {msg.ip} is not this home's STB")
            return
        known = self._requests.get(msg.request_id)
        if known is not None:
            # A retransmission: answer with the latest reply, to wherever the STB is now.
            known.addr = addr
            if known.reply is not None:
                self._send(known.reply, addr)
            return
        entry = _Request(msg, addr, now)
        self._requests[msg.request_id] = entry
        if msg.type is MsgType.INSTRUCTION:
            self._events.append(InstructionReceived(msg.request_id, addr, test=bool(msg.flags & Flag.TEST)))
            self.reply_codes(msg.request_id, CodesReply(PartState.PENDING, PartState.PENDING), now)
        else:
            self._events.append(RevokeRequested(msg.request_id, addr))

    # -- actions ------------------------------------------------------------------------------

    def reply_codes(self, request_id: bytes, codes: CodesReply, now: float) -> None:
        """Queue a CODES reply for an instruction (and keep it for retransmissions)."""
        entry = self._requests.get(request_id)
        if entry is None or entry.request.type is not MsgType.INSTRUCTION:
            return
        reply = Message(
            type=MsgType.CODES,
            request_id=request_id,
            seq=entry.request.seq,
            timestamp_ms=0,
            ip=entry.request.ip,
            flags=Flag.FINAL if codes.final else Flag.NONE,
            door_code=codes.door_code,
            parking_code=codes.parking_code,
            door_state=codes.door_state,
            parking_state=codes.parking_state,
            door_valid_until=codes.door_valid_until_ms,
            parking_valid_until=codes.parking_valid_until_ms,
        )
        entry.reply = reply
        entry.seen_at = now
        self._send(reply, entry.addr)

    def reply_revoked(self, request_id: bytes, cleared: int, failed: int, now: float) -> None:
        """Queue the REVOKED reply for a revoke request."""
        entry = self._requests.get(request_id)
        if entry is None or entry.request.type is not MsgType.REVOKE:
            return
        reply = Message(
            type=MsgType.REVOKED,
            request_id=request_id,
            seq=entry.request.seq,
            timestamp_ms=0,
            ip=entry.request.ip,
            flags=Flag.FINAL,
            cleared=min(cleared, 255),
            failed=min(failed, 255),
        )
        entry.reply = reply
        entry.seen_at = now
        self._send(reply, entry.addr)

    # -- output -------------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now_ms: int) -> list[tuple[bytes, Addr]]:
        """Signed datagrams to transmit, stamped with the wall clock `now_ms`."""
        pending, self._out = self._out, []
        return [(wire.encode(dataclasses.replace(m, timestamp_ms=now_ms), self._key), a) for m, a in pending]

    # -- internals ----------------------------------------------------------------------------

    def _send(self, msg: Message, addr: Addr) -> None:
        self._out.append((msg, addr))

    def _drop(self, addr: Addr, reason: str) -> None:
        self.dropped += 1
        self._events.append(DatagramDropped(addr, reason))

    def _forget(self, now: float) -> None:
        while self._requests:
            rid, entry = next(iter(self._requests.items()))
            if now - entry.seen_at < REMEMBER_S and len(self._requests) <= MAX_REMEMBERED:
                break
            del self._requests[rid]
