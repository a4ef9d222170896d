"""The sans-IO SIP user agent core: transactions, dialogs, digest auth, REGISTER, calls, MESSAGE.

Surface (STYLE.md §1): `receive_datagram()` / `receive_message()` feed bytes or parsed messages with
their source and `now`; `datagrams_to_send()` returns what to transmit; `next_event()` hands out
events; `get_timer()` / `handle_timer()` drive every deadline. User actions (`register()`,
`invite()`, `cancel()`, `bye()`, `answer()`, `reject()`, `message()`) only queue output.

This file is the transport-facing half: framing, transactions, digest retry, responses. REGISTER,
MESSAGE and out-of-dialog requests are in `agent_requests.py`; INVITE sessions (re-INVITE/UPDATE,
INFO, session timers) in `agent_calls.py`; each subclasses the one before, so each file keeps one
concern.
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from voip_sos.errors import AuthError, ProtocolError, RemoteProtocolError
from voip_sos.sip import timer_version
from voip_sos.sip.call import Call
from voip_sos.sip.digest import build_authorization, pick_challenge
from voip_sos.sip.events import Event
from voip_sos.sip.headers import NameAddr, SipUri, Via
from voip_sos.sip.message import Headers, Message, Request, Response, parse_datagram
from voip_sos.sip.register import Registration
from voip_sos.sip.transaction import ClientTransaction, ServerTransaction, TimerConfig, TxState

__all__ = ["AgentConfig", "AgentCore", "Outgoing", "Pending"]

log = logging.getLogger(__name__)

Addr = tuple[str, int]
LARGE_REQUEST_BYTES = 1300  # §18.1.1: above this (MTU 1500 minus headroom) UDP requests go to TCP
MAX_AUTH_ATTEMPTS = 3  # first challenge + stale re-challenges; never an endless loop
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, MESSAGE, NOTIFY"
SUPPORTED = ("timer",)
# RFC 3261 §21 (and 202 from RFC 3428): the reason phrases peers show their users ("403 Forbidden").
REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}  # fmt: skip
_CLASS_REASONS = {1: "Progress", 2: "Success", 3: "Redirection", 4: "Request Failure", 5: "Server Failure",
                  6: "Global Failure"}  # fmt: skip


def reason_phrase(status: int) -> str:
    """The RFC 3261 phrase for `status`, or its class's name for a code RFC 3261 does not list."""
    return REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    user: str
    domain: str
    local_host: str
    local_port: int
    password: str = ""
    display_name: str | None = None
    transport: str = "udp"
    registrar: Addr | None = None
    proxy: Addr | None = None
    expires_s: int = 600
    codecs: tuple[str, ...] = ("PCMA", "PCMU")
    timers: TimerConfig = field(default_factory=TimerConfig)
    user_agent: str = "voip-sos/0.1"
    large_request_bytes: int = LARGE_REQUEST_BYTES
    accept_incoming: bool = False
    register_retry_base_s: float = 2.0
    register_retry_max_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Bytes for the adapter to send. `fallback_udp`: a large request sent over TCP that must go
    over UDP if the TCP connection is refused; report that with `transport_failed(tx_key)`."""

    data: bytes
    addr: Addr
    transport: str
    tx_key: str | None = None
    fallback_udp: bool = False


@dataclass(slots=True)
class Pending:
    """One logical client request, re-sent with credentials when challenged."""

    request: Request
    dest: Addr
    transport: str
    purpose: str
    handle: str
    auth_tries: int = 0
    large: bool = False
    retried_422: bool = False


class AgentCore:
    """Transport-facing half of the agent: framing, transactions, auth, REGISTER, MESSAGE."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.registration = Registration(
            config.expires_s, config.register_retry_base_s, config.register_retry_max_s
        )
        self.registration.call_id = self.new_id()
        self.calls: dict[str, Call] = {}
        self._client: dict[str, tuple[ClientTransaction, Pending]] = {}
        self._server: dict[str, tuple[ServerTransaction, Addr]] = {}
        self._timer_version = -1  # timer_version.version when _timer_best was found
        self._timer_best: float | None = None
        self._outbox: list[Outgoing] = []
        self._events: collections.deque[Event] = collections.deque()
        self._register_tag = self.new_tag()
        self.public_address: Addr | None = None
        self.dropped = 0

    # -- identity and addressing ---------------------------------------------------------------

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(12)

    @staticmethod
    def new_tag() -> str:
        return secrets.token_hex(6)

    @property
    def aor(self) -> str:
        return f"sip:{self.config.user}@{self.config.domain}"

    def contact(self, transport: str) -> str:
        suffix = ";transport=tcp" if transport.upper() == "TCP" else ""
        return f"<sip:{self.config.user}@{self.config.local_host}:{self.config.local_port}{suffix}>"

    def via(self, transport: str, branch: str | None = None) -> str:
        branch = branch or "z9hG4bK" + secrets.token_hex(10)
        host = f"{self.config.local_host}:{self.config.local_port}"
        return f"SIP/2.0/{transport.upper()} {host};branch={branch};rport"

    def target_uri(self, number: str) -> str:
        if number.startswith(("sip:", "sips:", "tel:")):
            return number
        return f"sip:{number}@{self.config.domain}"

    def route_for(self, uri: str) -> tuple[Addr, str]:
        """§8.1.2 next hop for an out-of-dialog request: outbound proxy, registrar, or the URI."""
        parsed = SipUri.parse(uri)
        transport = parsed.params.get("transport") or self.config.transport
        hop = self.config.proxy or self.config.registrar
        if hop is not None:
            return hop, transport.upper()
        return (parsed.host.strip("[]"), parsed.port or 5060), transport.upper()

    def base_request(self, method: str, uri: str, to: str, from_: str, call_id: str, cseq: int) -> Request:
        h = Headers()
        h.add("Via", "")  # filled in by start_client
        h.add("Max-Forwards", "70")
        h.add("From", from_)
        h.add("To", to)
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{cseq} {method}")
        h.add("User-Agent", self.config.user_agent)
        return Request(headers=h, method=method, uri=uri)

    # -- sans-IO surface -------------------------------------------------------------------------

    def datagrams_to_send(self, now: float | None = None) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def emit(self, event: Event) -> None:
        log.debug("event %s", event)
        self._events.append(event)

    def receive_datagram(self, data: bytes, addr: Addr, now: float, transport: str = "UDP") -> None:
        """One UDP datagram (or one framed TCP message). Malformed input is answered if it can be,
        logged and counted, never raised (STYLE.md §5)."""
        if not data.strip(b"\r\n"):
            return  # RFC 5626 keep-alive
        try:
            msg = parse_datagram(data)
        except ProtocolError as exc:
            self.dropped += 1
            log.warning("dropped malformed message from %s: %s", addr, exc)
            self._answer_malformed(data, exc, addr, transport)
            return
        self.receive_message(msg, addr, now, transport)

    def receive_message(self, msg: Message, addr: Addr, now: float, transport: str = "UDP") -> None:
        try:
            if isinstance(msg, Response):
                self._receive_response(msg, now)
            else:
                assert isinstance(msg, Request)
                self._receive_request(msg, addr, transport.upper(), now)
        except ProtocolError as exc:
            self.dropped += 1
            log.warning("dropped %r from %s: %s", msg, addr, exc)

    def get_timer(self) -> float | None:
        # Asked after every datagram: the earliest deadline of every transaction and call is kept,
        # and found again only when a timer moved since (voip_sos/sip/timer_version.py).
        if self._timer_version != timer_version.version:
            self._timer_version = timer_version.version
            self._timer_best = self._earliest_deadline()
        best = self._timer_best
        reg = self.registration.next_attempt_at
        if reg is not None and (best is None or reg < best):
            best = reg
        return best

    def _earliest_deadline(self) -> float | None:
        # Plain loops over cached values (a list per transaction made this the busiest function of
        # a 300-call surge).
        best: float | None = None
        for tx, _ in self._client.values():
            t = tx.timer_at
            if t is not None and (best is None or t < best):
                best = t
        for stx, _ in self._server.values():
            t = stx.timer_at
            if t is not None and (best is None or t < best):
                best = t
        for call in self.calls.values():
            t = call.next_deadline()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        for key, (ctx, pending) in list(self._client.items()):
            if (t := ctx.timer_at) is not None and t <= now:
                ctx.handle_timer(now)
                self.flush_client(ctx, pending)
                if ctx.terminated:
                    del self._client[key]
                    if ctx.timed_out:
                        self.request_failed(pending, None, "timeout", now)
        for key, (stx, dest) in list(self._server.items()):
            if (t := stx.timer_at) is not None and t <= now:
                stx.handle_timer(now)
                self.flush_server(stx, dest)
                if stx.terminated:
                    del self._server[key]
                    if stx.timed_out:
                        self.server_timed_out(stx, now)
        reg = self.registration
        if reg.next_attempt_at is not None and reg.next_attempt_at <= now:
            self.send_register(now)
        self.call_timers(now)
        # What ended here took its deadlines along without moving the counter: look again.
        self._timer_version = -1

    def transport_failed(self, tx_key: str, now: float) -> None:
        """The adapter could not deliver a request (TCP refused, unreachable)."""
        entry = self._client.get(tx_key)
        if entry is None:
            return
        ctx, pending = entry
        if pending.large and ctx.transport == "TCP":
            log.info("TCP refused for large %s; sending it over UDP (§18.1.1)", ctx.method)
            pending.large = False
            pending.transport = "UDP"
            ctx.fall_back_to_udp(now)
            self.flush_client(ctx, pending)
            return
        ctx.transport_failed()
        del self._client[tx_key]
        self.request_failed(pending, 503, "transport error", now)

    # -- client side -------------------------------------------------------------------------------

    def start_client(self, pending: Pending, now: float, branch: str | None = None) -> ClientTransaction:
        req = pending.request
        transport = pending.transport
        req.headers.set("Via", self.via(transport, branch))
        if (
            transport == "UDP"
            and len(req.to_bytes()) > self.config.large_request_bytes
            and req.method != "ACK"
        ):
            # §18.1.1: too large for UDP without fragmentation risk; try TCP first.
            transport = "TCP"
            pending.large = True
            pending.transport = "TCP"
            via = Via.parse(req.headers.get_all("Via")[0])
            req.headers.set("Via", str(Via("TCP", via.host, via.port, via.params)))
        ctx = ClientTransaction(req, transport, self.config.timers, now)
        self._client[ctx.key] = (ctx, pending)
        self.flush_client(ctx, pending)
        return ctx

    def flush_client(self, ctx: ClientTransaction, pending: Pending) -> None:
        for data, transport in ctx.pop_outgoing():
            self._outbox.append(Outgoing(data, pending.dest, transport, ctx.key, pending.large))

    def flush_server(self, stx: ServerTransaction, dest: Addr) -> None:
        for data, transport in stx.pop_outgoing():
            self._outbox.append(Outgoing(data, dest, transport))

    def send_raw(self, data: bytes, dest: Addr, transport: str) -> None:
        self._outbox.append(Outgoing(data, dest, transport))

    def _receive_response(self, resp: Response, now: float) -> None:
        vias = resp.headers.get_all("Via")
        if not vias:
            raise RemoteProtocolError("missing Via header")
        via = Via.parse(vias[0])
        method = (resp.headers.get("CSeq") or "").split()[-1]
        entry = self._client.get(f"{via.branch}/{method}")
        if entry is None:
            call = self.calls.get(resp.call_id)
            if call is not None and method == "INVITE" and 200 <= resp.status < 300:
                self.stray_invite_2xx(call, resp, now)  # 2xx after the transaction ended
            return
        ctx, pending = entry
        if not ctx.receive_response(resp, now):
            self.flush_client(ctx, pending)
            return
        self.flush_client(ctx, pending)
        if ctx.terminated:
            del self._client[ctx.key]
        if resp.status in (401, 407) and self._retry_with_auth(pending, resp, now):
            return
        if resp.status >= 200 and "received" in via.params and pending.purpose == "register":
            port = via.params.get("rport")
            host = via.params["received"] or ""
            self.public_address = (host, int(port) if port and port.isdigit() else via.port or 5060)
        self.response_received(pending, resp, now)

    def _retry_with_auth(self, pending: Pending, resp: Response, now: float) -> bool:
        """§22.2: answer a 401/407 once; again only for stale=true (RFC 7616 §3.3)."""
        proxy = resp.status == 407
        values = resp.headers.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        try:
            challenge = pick_challenge(values, proxy)
        except AuthError as exc:
            log.warning("%s %s: %s", pending.purpose, pending.handle, exc)
            return False
        if pending.auth_tries >= MAX_AUTH_ATTEMPTS or (pending.auth_tries and not challenge.stale):
            log.warning("%s %s: credentials rejected (%d)", pending.purpose, pending.handle, resp.status)
            return False
        value = build_authorization(
            challenge,
            username=self.config.user,
            password=self.config.password,
            method=pending.request.method,
            uri=pending.request.uri,
            cnonce=secrets.token_hex(8),
            body=pending.request.body,
        )
        name = "Proxy-Authorization" if proxy else "Authorization"
        self.reissue(pending, now, [(name, value)], drop=("authorization", "proxy-authorization"), auth=True)
        return True

    def reissue(
        self,
        pending: Pending,
        now: float,
        headers: list[tuple[str, str]],
        drop: tuple[str, ...] = (),
        auth: bool = False,
    ) -> None:
        """Send `pending`'s request again as a new transaction (CSeq + 1, new branch) with
        `headers` set and `drop` removed: the answer to a 401/407 or a 422 (§8.1.3.5)."""
        old = pending.request
        h = Headers([(n, v) for n, v in old.headers if n.lower() not in drop])
        seq, method = (old.headers.get("CSeq") or "1 X").split()
        h.set("CSeq", f"{int(seq) + 1} {method}")
        for n, v in headers:
            h.set(n, v)
        call = self.calls.get(old.call_id)
        if call is not None and call.dialog is not None:
            call.dialog.local_seq = max(call.dialog.local_seq, int(seq) + 1)
        if pending.purpose == "register":
            self.registration.cseq = int(seq) + 1
        new = Request(headers=h, method=old.method, uri=old.uri, body=old.body)
        tries = pending.auth_tries + 1 if auth else pending.auth_tries
        retry = Pending(new, pending.dest, pending.transport, pending.purpose, pending.handle, tries)
        retry.retried_422 = pending.retried_422
        if pending.large:
            retry.transport = "UDP"  # decide TCP-or-UDP afresh from the UDP path (§18.1.1)
        ctx = self.start_client(retry, now)
        self.request_reissued(retry, ctx, now)

    # -- server side -------------------------------------------------------------------------------

    def _receive_request(self, req: Request, addr: Addr, transport: str, now: float) -> None:
        self._stamp_via(req, addr)
        dest = self._response_dest(req, addr, transport)
        if req.method == "ACK":
            entry = self._server.get(ServerTransaction.key_for(req))
            if entry is not None and entry[0].state is TxState.COMPLETED:
                entry[0].receive_request(req, now)
            else:
                self.ack_received(req, now)
            return
        key = ServerTransaction.key_for(req)
        entry = self._server.get(key)
        if entry is not None:
            entry[0].receive_request(req, now)
            self.flush_server(entry[0], entry[1])
            return
        stx = ServerTransaction(req, transport, addr, self.config.timers, now)
        self._server[key] = (stx, dest)
        unsupported = [o for o in req.headers.get_all("Require") if o.lower() not in SUPPORTED]
        if unsupported and req.method != "CANCEL":
            self.respond(stx, 420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        try:
            self.dispatch_request(stx, req, now)
        except ProtocolError as exc:
            log.warning("answering %s with %d: %s", req.method, exc.status_hint, exc)
            if stx.state.name in ("TRYING", "PROCEEDING"):
                self.respond(stx, exc.status_hint)

    def _stamp_via(self, req: Request, addr: Addr) -> None:
        """§18.2.1 received, RFC 3581 rport: record where the request really came from."""
        via = Via.parse(req.headers.get_all("Via")[0])
        params = dict(via.params)
        if "rport" in params:
            params["rport"] = str(addr[1])
            params["received"] = addr[0]
        elif via.host.strip("[]") != addr[0]:
            params["received"] = addr[0]
        else:
            return
        req.headers.remove_first("Via")
        req.headers.prepend("Via", str(Via(via.transport, via.host, via.port, params)))

    @staticmethod
    def _response_dest(req: Request, addr: Addr, transport: str) -> Addr:
        """§18.2.2 / RFC 3581 §4: the connection for TCP; received+rport, else sent-by port."""
        if transport != "UDP":
            return addr
        via = Via.parse(req.headers.get_all("Via")[0])
        host = via.params.get("received") or via.host
        rport = via.params.get("rport")
        port = int(rport) if rport and rport.isdigit() else (via.port or 5060)
        return host.strip("[]"), port

    def make_response(
        self,
        req: Request,
        status: int,
        reason: str | None = None,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        h = Headers()
        for v in req.headers.get_all("Via"):
            h.add("Via", v)
        h.add("From", req.headers.get("From") or "")
        to = req.headers.get("To") or ""
        if to_tag and status > 100 and NameAddr.parse(to, "To").tag is None:
            to = f"{to};tag={to_tag}"
        h.add("To", to)
        h.add("Call-ID", req.call_id)
        h.add("CSeq", req.headers.get("CSeq") or "")
        if (req.method == "INVITE" and 200 <= status < 300) or req.method == "OPTIONS":
            h.add("Allow", ALLOW)
            h.add("Supported", ", ".join(SUPPORTED))
        h.add("Server", self.config.user_agent)
        for n, v in headers:
            h.add(n, v)
        if body:
            h.add("Content-Type", content_type or "application/sdp")
        return Response(headers=h, body=body, status=status, reason=reason or reason_phrase(status))

    def respond(
        self,
        stx: ServerTransaction,
        status: int,
        reason: str | None = None,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        now: float = 0.0,
    ) -> Response:
        resp = self.make_response(
            stx.request, status, reason, to_tag or self.new_tag(), headers, body, content_type
        )
        stx.respond(resp, now)
        entry = self._server.get(stx.key)
        dest = entry[1] if entry else self._response_dest(stx.request, stx.source, stx.transport)
        self.flush_server(stx, dest)
        return resp

    def client_entries(self) -> list[tuple[ClientTransaction, Pending]]:
        return list(self._client.values())

    def client_entry(self, key: str) -> tuple[ClientTransaction, Pending] | None:
        return self._client.get(key)

    def server_entry(self, key: str) -> tuple[ServerTransaction, Addr] | None:
        return self._server.get(key)

    def _answer_malformed(self, data: bytes, exc: ProtocolError, addr: Addr, transport: str) -> None:
        """Answer a request we could not parse fully when its head still names a Via, From, To,
        Call-ID and CSeq; otherwise there is nobody to answer (§21.4.1)."""
        if data.startswith(b"SIP/") or b" ACK " in data.split(b"\r\n", 1)[0] + b" ":
            return
        lines = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
        got: dict[str, str] = {}
        h = Headers()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            h.add(name.strip(), value.strip())
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            v = h.get(name)
            if v is None:
                return
            got[name] = v
        try:
            Via.parse(h.get_all("Via")[0])
        except ProtocolError:
            return
        resp = Response(status=exc.status_hint, reason=REASONS.get(exc.status_hint, "Bad Request"))
        for name, value in got.items():
            resp.headers.add(name, value)
        resp.headers.add("Warning", f'399 {self.config.local_host} "{str(exc)[:100]}"')
        req = Request(headers=h, method="X", uri="sip:x")
        self.send_raw(resp.to_bytes(), self._response_dest(req, addr, transport.upper()), transport.upper())

    # Hooks the subclasses provide (agent_requests.py, agent_calls.py).
    def send_register(self, now: float) -> None:
        raise NotImplementedError

    def response_received(self, pending: Pending, resp: Response, now: float) -> None:
        raise NotImplementedError

    def request_failed(self, pending: Pending, status: int | None, reason: str, now: float) -> None:
        raise NotImplementedError

    def dispatch_request(self, stx: ServerTransaction, req: Request, now: float) -> None:
        raise NotImplementedError

    def call_response(self, pending: Pending, resp: Response, now: float) -> None:
        raise NotImplementedError

    def call_request_failed(self, pending: Pending, status: int | None, reason: str, now: float) -> None:
        raise NotImplementedError

    def call_request(self, stx: ServerTransaction, req: Request, to_tag: str | None, now: float) -> None:
        raise NotImplementedError

    def ack_received(self, req: Request, now: float) -> None:
        raise NotImplementedError

    def stray_invite_2xx(self, call: Call, resp: Response, now: float) -> None:
        raise NotImplementedError

    def server_timed_out(self, stx: ServerTransaction, now: float) -> None:
        raise NotImplementedError

    def call_timers(self, now: float) -> None:
        raise NotImplementedError

    def request_reissued(self, pending: Pending, ctx: ClientTransaction, now: float) -> None:
        raise NotImplementedError
