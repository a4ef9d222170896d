"""SIP transactions (RFC 3261 §17, with the RFC 6026 Accepted states): sans-IO state machines.

How this works: a transaction owns one request and the responses to it, and nothing else. The user
agent creates one per request it sends (client) or receives (server), feeds it messages and timer
ticks with `now`, and collects what it must transmit with `pop_outgoing()`. Timers are deadlines:
  client INVITE      A retransmit (T1, doubling), B give up (64·T1), D absorb (32 s UDP),
                     M absorb retransmitted 2xx after Accepted (64·T1; RFC 6026 §8.4)
  client non-INVITE  E retransmit (T1 doubling to T2; T2 once proceeding), F give up (64·T1),
                     K absorb (T4 UDP)
  server INVITE      G resend final (T1 doubling to T2), H wait for ACK (64·T1), I absorb ACKs (T4);
                     2xx resent the same way until ACKed (§13.3.1.4), L = 64·T1 (RFC 6026 §8.7)
  server non-INVITE  J absorb retransmitted requests (64·T1 UDP)
On a reliable transport nothing is retransmitted and D/I/J/K are zero (§17.1.1.2, §17.2.1).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from voip_sos.errors import LocalProtocolError
from voip_sos.sip import timer_version
from voip_sos.sip.headers import NameAddr, Via
from voip_sos.sip.message import Headers, Request, Response

__all__ = [
    "T1_SECONDS",
    "T2_SECONDS",
    "T4_SECONDS",
    "ClientTransaction",
    "ServerTransaction",
    "TimerConfig",
    "TxState",
]

log = logging.getLogger(__name__)

T1_SECONDS = 0.5
T2_SECONDS = 4.0
T4_SECONDS = 5.0
TIMER_D_UDP_SECONDS = 32.0

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TimerConfig:
    t1: float = T1_SECONDS
    t2: float = T2_SECONDS
    t4: float = T4_SECONDS


class TxState(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


S = TxState
_TRANSITIONS: dict[TxState, frozenset[TxState]] = {
    S.CALLING: frozenset({S.PROCEEDING, S.ACCEPTED, S.COMPLETED, S.TERMINATED}),
    S.TRYING: frozenset({S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
    S.PROCEEDING: frozenset({S.ACCEPTED, S.COMPLETED, S.TERMINATED}),
    S.ACCEPTED: frozenset({S.CONFIRMED, S.TERMINATED}),
    S.COMPLETED: frozenset({S.CONFIRMED, S.TERMINATED}),
    S.CONFIRMED: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}


class _Transaction:
    def __init__(self, request: Request, transport: str, timers: TimerConfig) -> None:
        self.request = request
        self.method = request.method
        self.transport = transport.upper()
        self.timers = timers
        self.state = S.TERMINATED
        self._outgoing: list[tuple[bytes, str]] = []
        # The earliest of the three timers, kept up to date by their setters: the agent asks every
        # transaction for it after every datagram, so it must cost an attribute read, not a min().
        self.timer_at: float | None = None
        self._r: float | None = None
        self._d: float | None = None
        self._e: float | None = None
        self._interval = timers.t1
        self.timed_out = False
        self.retransmissions = 0

    def _timers_changed(self) -> None:
        best = self._r
        for t in (self._d, self._e):
            if t is not None and (best is None or t < best):
                best = t
        self.timer_at = best
        timer_version.bump()

    @property
    def _retransmit_at(self) -> float | None:
        return self._r

    @_retransmit_at.setter
    def _retransmit_at(self, when: float | None) -> None:
        self._r = when
        self._timers_changed()

    @property
    def _deadline_at(self) -> float | None:
        return self._d

    @_deadline_at.setter
    def _deadline_at(self, when: float | None) -> None:
        self._d = when
        self._timers_changed()

    @property
    def _end_at(self) -> float | None:
        return self._e

    @_end_at.setter
    def _end_at(self, when: float | None) -> None:
        self._e = when
        self._timers_changed()

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"

    def _set_state(self, new: TxState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(
                f"{type(self).__name__} {self.method}: illegal move {self.state.name} -> {new.name}"
            )
        log.debug("transaction %s %s: %s -> %s", self.method, self.key, self.state.name, new.name)
        self.state = new

    @property
    def key(self) -> str:
        raise NotImplementedError

    def pop_outgoing(self) -> list[tuple[bytes, str]]:
        """Bytes to transmit and the transport to use, in order; clears the queue."""
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        return self.timer_at

    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED

    def _terminate(self) -> None:
        if self.state is not S.TERMINATED:
            self._set_state(S.TERMINATED)
        self._retransmit_at = self._deadline_at = self._end_at = None


class ClientTransaction(_Transaction):
    """Sends one request; `receive_response()` says which responses the TU must see."""

    def __init__(self, request: Request, transport: str, timers: TimerConfig, now: float) -> None:
        super().__init__(request, transport, timers)
        via = Via.parse(request.headers.get_all("Via")[0])
        if not via.branch:
            raise LocalProtocolError("request without Via branch")
        self.branch = via.branch
        self.state = S.CALLING if self.method == "INVITE" else S.TRYING
        self._start(now)

    @property
    def key(self) -> str:
        return f"{self.branch}/{self.method}"

    def _start(self, now: float) -> None:
        self._outgoing.append((self.request.to_bytes(), self.transport))
        self._interval = self.timers.t1
        self._retransmit_at = None if self.reliable else now + self._interval
        self._deadline_at = now + 64 * self.timers.t1

    def fall_back_to_udp(self, now: float) -> None:
        """§18.1.1: a large request went to TCP and the peer refused it; send it over UDP after all
        (our Via must then say UDP) and restart timers A/E as for any UDP request."""
        if self.transport == "UDP" or self.state not in (S.CALLING, S.TRYING):
            raise LocalProtocolError(f"cannot fall back to UDP in {self.state.name}")
        vias = self.request.headers.get_all("Via")
        top = Via.parse(vias[0])
        self.request.headers.remove_first("Via")
        self.request.headers.prepend("Via", str(Via("UDP", top.host, top.port, top.params)))
        self.transport = "UDP"
        self._start(now)

    def receive_response(self, resp: Response, now: float) -> bool:
        """Feed a response matched to this transaction; True if the TU must see it."""
        code = resp.status
        if self.state in (S.CALLING, S.TRYING, S.PROCEEDING):
            if code < 200:
                if self.state is not S.PROCEEDING:
                    self._set_state(S.PROCEEDING)
                if self.method == "INVITE":
                    self._retransmit_at = None  # §17.1.1.2: stop A once anything came back
                elif self._retransmit_at is not None:
                    self._interval = self.timers.t2
                return True
            self._deadline_at = None
            self._retransmit_at = None
            if self.method == "INVITE":
                if code < 300:
                    self._set_state(S.ACCEPTED)
                    self._end_at = now + 64 * self.timers.t1
                else:
                    self._set_state(S.COMPLETED)
                    self._send_ack(resp)
                    self._end_at = now + (0.0 if self.reliable else TIMER_D_UDP_SECONDS)
            else:
                self._set_state(S.COMPLETED)
                self._end_at = now + (0.0 if self.reliable else self.timers.t4)
            return True
        if self.state is S.ACCEPTED:
            # RFC 6026 §8.4: each retransmitted 2xx goes up so the TU ACKs it again.
            return 200 <= code < 300
        if self.state is S.COMPLETED and self.method == "INVITE" and code >= 300:
            self._send_ack(resp)
        return False

    def _send_ack(self, resp: Response) -> None:
        """§17.1.1.3: ACK for a non-2xx final, same branch, To from the response."""
        req = self.request
        h = Headers()
        h.add("Via", req.headers.get_all("Via")[0])
        for name in ("Route",):
            for v in req.headers.get_all(name):
                h.add(name, v)
        h.add("Max-Forwards", "70")
        h.add("From", req.headers.get("From") or "")
        h.add("To", resp.headers.get("To") or "")
        h.add("Call-ID", req.call_id)
        h.add("CSeq", f"{(req.headers.get('CSeq') or '1').split()[0]} ACK")
        ack = Request(headers=h, method="ACK", uri=req.uri)
        self._outgoing.append((ack.to_bytes(), self.transport))

    def handle_timer(self, now: float) -> None:
        if self._end_at is not None and now >= self._end_at:
            self._terminate()
            return
        if self._deadline_at is not None and now >= self._deadline_at:
            log.info("transaction %s timed out in %s", self.key, self.state.name)
            self.timed_out = True
            self._terminate()
            return
        if self._retransmit_at is not None and now >= self._retransmit_at:
            self._outgoing.append((self.request.to_bytes(), self.transport))
            self.retransmissions += 1
            if self.method == "INVITE":
                self._interval *= 2  # timer A: no T2 cap (§17.1.1.2)
            elif self.state is S.PROCEEDING:
                self._interval = self.timers.t2
            else:
                self._interval = min(self._interval * 2, self.timers.t2)
            self._retransmit_at = now + self._interval

    def transport_failed(self) -> None:
        """§17.1.1.2 / §17.1.2.2: a transport error ends the transaction; the TU treats it as 503."""
        self.timed_out = True
        self._terminate()


class ServerTransaction(_Transaction):
    """Answers one received request; retransmitted requests are absorbed or re-answered."""

    def __init__(
        self, request: Request, transport: str, source: Addr, timers: TimerConfig, now: float
    ) -> None:
        super().__init__(request, transport, timers)
        self.source = source
        self.top_via = Via.parse(request.headers.get_all("Via")[0])
        self.state = S.PROCEEDING if self.method == "INVITE" else S.TRYING
        self.last_response: Response | None = None
        self.acked = False
        self.created_at = now

    @staticmethod
    def key_for(request: Request) -> str:
        """§17.2.3: branch + sent-by + method, ACK matching its INVITE."""
        via = Via.parse(request.headers.get_all("Via")[0])
        method = "INVITE" if request.method == "ACK" else request.method
        sent_by = f"{via.host}:{via.port or 5060}"
        branch = via.branch or ""
        if not branch.startswith("z9hG4bK"):
            # RFC 2543 peers: fall back to Call-ID + CSeq number + From tag.
            frm = NameAddr.parse(request.headers.get("From") or "").tag or ""
            cseq = (request.headers.get("CSeq") or "").split()[0]
            branch = f"{request.call_id}|{cseq}|{frm}"
        return f"{branch}/{sent_by}/{method}"

    @property
    def key(self) -> str:
        return self.key_for(self.request)

    def receive_request(self, request: Request, now: float) -> bool:
        """A retransmission (or the ACK) of our request; True if the TU must see it (a 2xx ACK)."""
        if request.method == "ACK":
            if self.state is S.COMPLETED:
                self._set_state(S.CONFIRMED)
                self._retransmit_at = self._deadline_at = None
                self._end_at = now + (0.0 if self.reliable else self.timers.t4)
            return False
        if self.state in (S.PROCEEDING, S.COMPLETED) and self.last_response is not None:
            self._outgoing.append((self.last_response.to_bytes(), self.transport))
        return False

    def ack_received(self, now: float) -> None:
        """The TU matched an ACK to our 2xx: stop resending it (§13.3.1.4)."""
        if self.state is S.ACCEPTED and not self.acked:
            self.acked = True
            self._retransmit_at = None

    def respond(self, response: Response, now: float) -> None:
        """Queue `response`; a final one moves the machine on and starts its timers."""
        if self.state not in (S.TRYING, S.PROCEEDING):
            raise LocalProtocolError(f"respond {response.status} to {self.method} in {self.state.name}")
        self.last_response = response
        self._outgoing.append((response.to_bytes(), self.transport))
        code = response.status
        if code < 200:
            if self.state is S.TRYING:
                self._set_state(S.PROCEEDING)
            return
        if self.method == "INVITE":
            self._interval = self.timers.t1
            self._retransmit_at = None if self.reliable else now + self._interval
            self._deadline_at = now + 64 * self.timers.t1
            self._set_state(S.ACCEPTED if code < 300 else S.COMPLETED)
        else:
            self._set_state(S.COMPLETED)
            self._end_at = now + (0.0 if self.reliable else 64 * self.timers.t1)

    def handle_timer(self, now: float) -> None:
        if self._end_at is not None and now >= self._end_at:
            self._terminate()
            return
        if self._deadline_at is not None and now >= self._deadline_at:
            # H (no ACK for a non-2xx) or L (2xx never ACKed: the TU should BYE, §13.3.1.4).
            self.timed_out = self.state is S.COMPLETED or not self.acked
            self._terminate()
            return
        if self._retransmit_at is not None and now >= self._retransmit_at and self.last_response:
            self._outgoing.append((self.last_response.to_bytes(), self.transport))
            self.retransmissions += 1
            self._interval = min(self._interval * 2, self.timers.t2)
            self._retransmit_at = now + self._interval
