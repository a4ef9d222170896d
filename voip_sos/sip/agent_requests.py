"""REGISTER (§10, 423, backoff), MESSAGE (RFC 3428) and out-of-dialog requests (OPTIONS, MESSAGE,
NOTIFY) on top of `AgentCore`; routes final outcomes to registration, messages or calls."""

from __future__ import annotations

import logging

from voip_sos.errors import ProtocolError
from voip_sos.sip.agent import ALLOW, AgentCore, Pending
from voip_sos.sip.events import MessageReceived, MessageResult, RegistrationChanged
from voip_sos.sip.headers import NameAddr, SipUri
from voip_sos.sip.message import Request, Response
from voip_sos.sip.register import RegState
from voip_sos.sip.transaction import ServerTransaction

__all__ = ["RequestsAgent"]

log = logging.getLogger(__name__)


class RequestsAgent(AgentCore):
    """Registration and messages; calls are added by `SipAgent`."""

    # -- REGISTER -------------------------------------------------------------------------------

    def register(self, now: float) -> None:
        """Queue a REGISTER now (initial or manual refresh)."""
        self.send_register(now)

    def unregister(self, now: float) -> None:
        """Queue a REGISTER with Expires: 0 (§10.2.2); RegistrationChanged(unregistered) follows."""
        if self.registration.state is RegState.UNREGISTERED:
            return
        self.registration.start_unregister()
        self._send_register_request(0, now)

    def send_register(self, now: float) -> None:
        if self.config.registrar is None and self.config.proxy is None:
            self.registration.stop()
            return
        expires = self.registration.start()
        self._send_register_request(expires, now)

    def _send_register_request(self, expires: int, now: float) -> None:
        reg = self.registration
        reg.cseq += 1
        aor = f"<{self.aor}>"
        dest, transport = self.route_for(f"sip:{self.config.domain}")
        req = self.base_request(
            "REGISTER",
            f"sip:{self.config.domain}",
            aor,
            f"{aor};tag={self._register_tag}",
            reg.call_id,
            reg.cseq,
        )
        req.headers.add("Contact", f"{self.contact(transport)};expires={expires}")
        req.headers.add("Expires", str(expires))
        req.headers.add("Allow", ALLOW)
        self.start_client(Pending(req, dest, transport, "register", reg.call_id), now)

    def _register_response(self, pending: Pending, resp: Response | None, now: float) -> None:
        reg = self.registration
        status = resp.status if resp else None
        reason = resp.reason if resp else "timeout"
        if resp is not None and resp.status < 200:
            return
        if resp is not None and 200 <= resp.status < 300:
            granted = self._granted_expires(resp, pending.request)
            reg.succeeded(granted, now)
            self.emit(RegistrationChanged(reg.state.value, status, reason, reg.granted_s))
            return
        if resp is not None and resp.status == 423 and reg.state is RegState.REGISTERING:
            min_exp = resp.headers.get("Min-Expires")
            if reg.too_brief(int(min_exp) if min_exp and min_exp.strip().isdigit() else None):
                log.info("registrar wants Min-Expires %s; retrying", min_exp)
                self.send_register(now)
                return
        retry_at = reg.failed(now)
        state = reg.state.value
        self.emit(RegistrationChanged(state, status, reason, None, retry_at if state == "failed" else None))

    def _granted_expires(self, resp: Response, req: Request) -> int:
        ours = NameAddr.parse(req.headers.get_all("Contact")[0], "Contact").uri
        for c in resp.headers.get_all("Contact"):
            try:
                na = NameAddr.parse(c, "Contact")
            except ProtocolError:
                continue
            if na.uri.user == ours.user and na.uri.port == ours.port and "expires" in na.params:
                value = na.params["expires"] or ""
                if value.isdigit():
                    return int(value)
        exp = resp.headers.get("Expires")
        if exp and exp.strip().isdigit():
            return int(exp)
        return int((req.headers.get("Expires") or "0").strip() or 0)

    # -- MESSAGE (RFC 3428) ---------------------------------------------------------------------

    def message(
        self, number: str, text: str, now: float, content_type: str = "text/plain;charset=UTF-8"
    ) -> str:
        """Queue a MESSAGE; returns its handle (the Call-ID). MessageResult carries the outcome."""
        uri = self.target_uri(number)
        dest, transport = self.route_for(uri)
        call_id = self.new_id()
        req = self.base_request("MESSAGE", uri, f"<{uri}>", self._from_header(None), call_id, 1)
        req.headers.add("Content-Type", content_type)
        req.body = text.encode("utf-8")
        self.start_client(Pending(req, dest, transport, "message", call_id), now)
        return call_id

    def _from_header(self, display_name: str | None) -> str:
        name = display_name if display_name is not None else self.config.display_name
        return f"{NameAddr(SipUri.parse(self.aor), name)};tag={self.new_tag()}"

    # -- routing outcomes ---------------------------------------------------------------------------

    def response_received(self, pending: Pending, resp: Response, now: float) -> None:
        if pending.purpose == "register":
            self._register_response(pending, resp, now)
        elif pending.purpose == "message" and resp.status >= 200:
            self.emit(MessageResult(pending.handle, resp.status, resp.reason))
        elif pending.purpose not in ("register", "message", "options"):
            self.call_response(pending, resp, now)

    def request_failed(self, pending: Pending, status: int | None, reason: str, now: float) -> None:
        if pending.purpose == "register":
            reg = self.registration
            retry_at = reg.failed(now)
            state = reg.state.value
            self.emit(
                RegistrationChanged(state, status, reason, None, retry_at if state == "failed" else None)
            )
        elif pending.purpose == "message":
            self.emit(MessageResult(pending.handle, status, reason))
        elif pending.purpose != "options":
            self.call_request_failed(pending, status, reason, now)

    def dispatch_request(self, stx: ServerTransaction, req: Request, now: float) -> None:
        method = req.method
        to_tag = NameAddr.parse(req.headers.get("To") or "", "To").tag
        if method == "OPTIONS" and not to_tag:
            self.respond(stx, 200, headers=[("Accept", "application/sdp")], now=now)
        elif method == "MESSAGE" and not to_tag:
            self.emit(
                MessageReceived(
                    str(NameAddr.parse(req.headers.get("From") or "").uri),
                    req.headers.get("Content-Type") or "text/plain",
                    req.body,
                )
            )
            self.respond(stx, 200, now=now)
        elif method == "NOTIFY" and not to_tag:
            self.respond(stx, 200, now=now)  # unsolicited MWI from Asterisk: acknowledge, ignore
        elif method in ("INVITE", "BYE", "CANCEL", "UPDATE", "INFO", "OPTIONS", "MESSAGE", "NOTIFY", "PRACK"):
            self.call_request(stx, req, to_tag, now)
        else:
            self.respond(stx, 501, headers=[("Allow", ALLOW)], now=now)
