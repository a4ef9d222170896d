"""INVITE sessions on top of `AgentCore`: outgoing and incoming calls, CANCEL, BYE, re-INVITE and
UPDATE (hold followed), INFO keys, session timers (RFC 4028), ACK for 2xx (§13.2.2.4).

`SipAgent` is the class adapters use.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from voip_sos.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from voip_sos.sip.agent import ALLOW, Pending
from voip_sos.sip.agent_requests import RequestsAgent
from voip_sos.sip.call import Call, CallState, parse_dtmf_info, parse_session_expires
from voip_sos.sip.dialog import Dialog
from voip_sos.sip.events import (
    CallAnswered,
    CallEnded,
    CallProgressed,
    DtmfReceived,
    IncomingCall,
    MediaUpdated,
)
from voip_sos.sip.headers import NameAddr
from voip_sos.sip.message import Message, Request, Response
from voip_sos.sip.multipart import BodyPart, build_multipart, parse_multipart
from voip_sos.sip.pidf import PIDF_CONTENT_TYPE, CivicAddress, build_pidf_lo, geolocation_headers
from voip_sos.sip.sdp import MediaParams, SessionDescription, build_answer, build_offer, negotiate
from voip_sos.sip.transaction import ClientTransaction, ServerTransaction, TxState

__all__ = ["Location", "SipAgent"]

log = logging.getLogger(__name__)

S = CallState


class Location:
    """What goes into the PIDF-LO part of an INVITE."""

    __slots__ = ("civic", "entity", "timestamp")

    def __init__(self, entity: str, civic: CivicAddress, timestamp: str) -> None:
        self.entity = entity
        self.civic = civic
        self.timestamp = timestamp


def _sdp_of(msg: Message) -> bytes | None:
    """The SDP in a body, whether alone or a part of multipart/mixed (RFC 5621)."""
    if not msg.body:
        return None
    ctype = (msg.headers.get("Content-Type") or "application/sdp").lower()
    if ctype.startswith("application/sdp"):
        return msg.body
    if ctype.startswith("multipart/"):
        for part in parse_multipart(msg.headers.get("Content-Type") or "", msg.body):
            if part.content_type.lower().startswith("application/sdp"):
                return part.body
    return None


class SipAgent(RequestsAgent):
    """The whole user agent core."""

    # -- user actions -----------------------------------------------------------------------------

    def invite(
        self,
        number: str,
        media_address: str,
        media_port: int,
        now: float,
        *,
        display_name: str | None = None,
        priority: str | None = None,
        location: Location | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> str:
        """Queue an INVITE offering our codecs at media_address:media_port; returns the Call-ID."""
        uri = self.target_uri(number)
        dest, transport = self.route_for(uri)
        call_id = self.new_id()
        frm = self._from_header(display_name)
        req = self.base_request("INVITE", uri, f"<{uri}>", frm, call_id, 1)
        req.headers.add("Contact", self.contact(transport))
        req.headers.add("Allow", ALLOW)
        req.headers.add("Supported", "timer")
        if priority:
            req.headers.add("Priority", priority)
        for n, v in extra_headers:
            req.headers.add(n, v)
        session_id = secrets.randbelow(2**31)
        sdp = build_offer(media_address, media_port, self.config.codecs, session_id, 1).to_bytes()
        if location is not None:
            cid = f"{secrets.token_hex(6)}@{self.config.domain}"
            pidf = build_pidf_lo(location.entity, location.civic, location.timestamp)
            ctype, body = build_multipart(
                [
                    BodyPart("application/sdp", sdp),
                    BodyPart(PIDF_CONTENT_TYPE, pidf, (("Content-ID", f"<{cid}>"),)),
                ],
                "voip-sos-" + secrets.token_hex(6),
            )
            for n, v in geolocation_headers(cid):
                req.headers.add(n, v)
            req.headers.add("Content-Type", ctype)
            req.body = body
        else:
            req.headers.add("Content-Type", "application/sdp")
            req.body = sdp
        tag = NameAddr.parse(frm).tag or ""
        call = Call(
            call_id, True, S.CALLING, req, dest, transport, tag, media_address, media_port, session_id
        )
        call.local_sdp = sdp
        self.calls[call_id] = call
        ctx = self.start_client(Pending(req, dest, transport, "invite", call_id), now)
        call.invite_tx_key = ctx.key
        return call_id

    def cancel(self, call_id: str, now: float) -> None:
        """§9.1: CANCEL an unanswered call (deferred until a provisional response has come)."""
        call = self._call(call_id)
        if call.state not in (S.CALLING, S.EARLY):
            raise LocalProtocolError(f"cannot CANCEL call {call_id} in {call.state.value}")
        call.set_state(S.CANCELLING)
        # If the far end never answers the CANCEL or the INVITE, end the call ourselves.
        call.give_up_at = now + 64 * self.config.timers.t1
        if call.provisional_seen:
            self._send_cancel(call, now)
        else:
            call.cancel_pending = True

    def _send_cancel(self, call: Call, now: float) -> None:
        inv = call.invite
        req = Request(method="CANCEL", uri=inv.uri)
        for name in ("Max-Forwards", "From", "To", "Call-ID"):
            req.headers.add(name, inv.headers.get(name) or "")
        for r in inv.headers.get_all("Route"):
            req.headers.add("Route", r)
        req.headers.add("CSeq", f"{inv.headers.get('CSeq', '1 INVITE').split()[0]} CANCEL")  # type: ignore[union-attr]
        branch = (call.invite_tx_key or "").split("/")[0]
        # §9.1: the CANCEL goes where the INVITE went, over the transport it finally took
        # (a large INVITE may have fallen back from TCP to UDP).
        entry = self.client_entry(call.invite_tx_key or "")
        transport = entry[0].transport if entry is not None else call.transport
        self.start_client(Pending(req, call.dest, transport, "cancel", call.call_id), now, branch=branch)

    def bye(self, call_id: str, now: float) -> None:
        """Queue a BYE for an established call."""
        call = self._call(call_id)
        if call.dialog is None or call.state not in (S.CONFIRMED, S.ANSWERING, S.CANCELLING):
            raise LocalProtocolError(f"cannot BYE call {call_id} in {call.state.value}")
        call.set_state(S.ENDING)
        call.refresh_at = call.expire_at = None
        self._send_in_dialog(call, "BYE", now)

    def hangup(self, call_id: str, now: float) -> None:
        """Whatever it takes to end the call: CANCEL, BYE or 486 to an incoming one."""
        call = self.calls.get(call_id)
        if call is None or call.state in (S.ENDED, S.ENDING, S.CANCELLING):
            return
        if call.state in (S.CALLING, S.EARLY):
            self.cancel(call_id, now)
        elif call.state is S.INCOMING:
            self.reject(call_id, 486, now)
        else:
            self.bye(call_id, now)

    def answer(self, call_id: str, media_address: str, media_port: int, now: float) -> None:
        """Queue 200 OK with our SDP for an incoming call; CallAnswered follows the ACK."""
        call = self._call(call_id)
        if call.state is not S.INCOMING or call.server_tx is None:
            raise LocalProtocolError(f"cannot answer call {call_id} in {call.state.value}")
        call.media_address, call.media_port = media_address, media_port
        call.sdp_session_id = secrets.randbelow(2**31)
        body = self._local_answer(call, _sdp_of(call.invite))
        call.dialog = Dialog.from_uas(
            call.invite, call.local_tag, call.transport, secrets.randbelow(2**16) + 1
        )
        call.dialog.confirm()
        call.set_state(S.ANSWERING)
        headers = [
            ("Contact", self.contact(call.transport)),
            *self._session_timer_answer(call, call.invite, now),
        ]
        self.respond(call.server_tx, 200, to_tag=call.local_tag, headers=headers, body=body, now=now)

    def reject(self, call_id: str, status: int, now: float) -> None:
        """Refuse an incoming call with `status` (486 busy, 603 decline …)."""
        call = self._call(call_id)
        if call.state is not S.INCOMING or call.server_tx is None:
            raise LocalProtocolError(f"cannot reject call {call_id} in {call.state.value}")
        self.respond(call.server_tx, status, to_tag=call.local_tag, now=now)
        self._end(call, "local", status, "rejected", now)

    def restore_dialog(self, state: dict[str, Any], now: float) -> str:
        """Adopt a dialog exported by an earlier process (`export_dialog`) so it can be ended."""
        dialog = Dialog.restore(state)
        hop = dialog.next_hop_uri()
        dest = self.config.proxy or (hop.host.strip("[]"), hop.port or 5060)
        req = Request(method="INVITE", uri=dialog.remote_target)
        call = Call(dialog.call_id, True, S.CONFIRMED, req, dest, dialog.transport, dialog.local_tag)
        call.dialog = dialog
        call.answered = True
        call.final_status = 200
        self.calls[dialog.call_id] = call
        return dialog.call_id

    def export_dialog(self, call_id: str) -> dict[str, Any]:
        """The call's dialog as plain data, plus where to send in-dialog requests."""
        call = self._call(call_id)
        if call.dialog is None:
            raise LocalProtocolError(f"call {call_id} has no dialog")
        return call.dialog.export()

    def _call(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None:
            raise LocalProtocolError(f"unknown call {call_id}")
        return call

    # -- sending within a dialog ------------------------------------------------------------------

    def _dialog_dest(self, call: Call) -> tuple[tuple[str, int], str]:
        assert call.dialog is not None
        if not call.dialog.route_set and self.config.proxy is not None:
            return self.config.proxy, call.dialog.transport
        hop = call.dialog.next_hop_uri()
        transport = (hop.params.get("transport") or call.dialog.transport).upper()
        return (hop.host.strip("[]"), hop.port or 5060), transport

    def _send_in_dialog(
        self,
        call: Call,
        method: str,
        now: float,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> None:
        assert call.dialog is not None
        dest, transport = self._dialog_dest(call)
        req = call.dialog.create_request(method, "")
        req.headers.add("User-Agent", self.config.user_agent)
        for n, v in headers:
            req.headers.add(n, v)
        if body:
            req.headers.add("Content-Type", "application/sdp")
            req.body = body
        purpose = "reinvite" if method == "INVITE" else method.lower()
        self.start_client(Pending(req, dest, transport, purpose, call.call_id), now)

    def _send_ack(self, call: Call, resp: Response) -> bool:
        """§13.2.2.4: ACK for a 2xx is a request of its own, built once per INVITE (CSeq) and sent
        again unchanged for each resent 2xx. Returns True the first time."""
        seq = int((resp.headers.get("CSeq") or "1").split()[0])
        kept = call.acks.get(seq)
        if kept is not None:
            self.send_raw(*kept)
            return False
        assert call.dialog is not None
        dest, transport = self._dialog_dest(call)
        ack = call.dialog.create_request("ACK", self.via(transport), cseq=seq)
        call.acks[seq] = (ack.to_bytes(), dest, transport)
        self.send_raw(*call.acks[seq])
        return True

    # -- responses to our requests ----------------------------------------------------------------

    def request_reissued(self, pending: Pending, ctx: ClientTransaction, now: float) -> None:
        """The INVITE went out again (credentials, 422): CANCEL and the dialog follow the new one."""
        call = self.calls.get(pending.handle)
        if call is not None and pending.purpose == "invite":
            call.invite = pending.request
            call.invite_tx_key = ctx.key
            call.dest, call.transport = pending.dest, pending.transport

    def call_response(self, pending: Pending, resp: Response, now: float) -> None:
        call = self.calls.get(pending.handle)
        if call is None:
            return
        if pending.purpose == "invite":
            self._invite_response(call, pending, resp, now)
        elif pending.purpose == "bye" and resp.status >= 200:
            self._end(call, "local", call.final_status, f"BYE answered {resp.status}", now)
        elif pending.purpose in ("update", "reinvite") and 200 <= resp.status < 300:
            if pending.purpose == "update" or self._send_ack(call, resp):
                self._refresh_done(call, resp, now)
        elif pending.purpose in ("update", "reinvite") and resp.status in (408, 481):
            self._bye_after_failure(call, now, f"refresh answered {resp.status}")

    def _invite_response(self, call: Call, pending: Pending, resp: Response, now: float) -> None:
        code = resp.status
        if code < 200:
            call.provisional_seen = True  # §9.1: CANCEL may follow any provisional response
            if call.cancel_pending and call.provisional_seen:
                call.cancel_pending = False
                self._send_cancel(call, now)
            if code == 100 or call.state is S.CANCELLING:
                return
            early: MediaParams | None = None
            sdp = _sdp_of(resp)
            if sdp is not None:
                # §13.2.1: SDP in a reliable-or-not 183 is early media, never the answer to act on.
                early = negotiate(SessionDescription.parse(sdp), self.config.codecs)
                call.media = early
            if NameAddr.parse(resp.headers.get("To") or "", "To").tag and call.dialog is None:
                call.dialog = Dialog.from_uac(call.invite, resp, self.config.transport.upper())
            call.set_state(S.EARLY)
            self.emit(CallProgressed(call.call_id, code, resp.reason, early))
            return
        if code < 300:
            if int((resp.headers.get("CSeq") or "1").split()[0]) in call.acks:
                self._send_ack(call, resp)  # retransmitted 2xx: the same ACK again, even after BYE
                return
            if (
                call.dialog is None
                or call.dialog.remote_tag != NameAddr.parse(resp.headers.get("To") or "", "To").tag
            ):
                call.dialog = Dialog.from_uac(call.invite, resp, self.config.transport.upper())
            else:
                call.dialog.update_from_response(resp)
            call.final_status, call.final_reason = code, resp.reason
            self._send_ack(call, resp)
            if call.state is S.CANCELLING:
                call.set_state(S.ENDING)
                self._send_in_dialog(call, "BYE", now)
                return
            sdp = _sdp_of(resp)
            try:
                media = negotiate(SessionDescription.parse(sdp), self.config.codecs) if sdp else call.media
            except ProtocolError as exc:
                log.warning("call %s: unusable answer: %s", call.call_id, exc)
                media = None
            if media is None:
                call.set_state(S.CONFIRMED)
                call.answered = True
                self.bye(call.call_id, now)
                return
            call.media = media
            call.answered = True
            call.set_state(S.CONFIRMED)
            self._session_timer_from_2xx(call, resp, now)
            self.emit(CallAnswered(call.call_id, media))
            return
        if code == 422 and not pending.retried_422 and call.state is not S.CANCELLING:
            # RFC 4028 §7.4: the far end wants a longer session interval; ask for its Min-SE.
            min_se = (resp.headers.get("Min-SE") or "").split(";")[0].strip()
            if min_se.isdigit():
                pending.retried_422 = True
                se = [("Session-Expires", min_se), ("Min-SE", min_se)]
                self.reissue(pending, now, se)
                return
        call.final_status, call.final_reason = code, resp.reason
        by = "local" if call.state is S.CANCELLING else "remote"
        self._end(call, by, code, resp.reason, now)

    def stray_invite_2xx(self, call: Call, resp: Response, now: float) -> None:
        if int((resp.headers.get("CSeq") or "1").split()[0]) in call.acks:
            self._send_ack(call, resp)

    def call_request_failed(self, pending: Pending, status: int | None, reason: str, now: float) -> None:
        call = self.calls.get(pending.handle)
        if call is None or call.ended:
            return
        if pending.purpose == "invite":
            by = "timeout" if status is None else "error"
            self._end(call, by, status or 408, reason, now)
        elif pending.purpose == "bye":
            self._end(call, "local", call.final_status, f"BYE {reason}", now)
        elif pending.purpose in ("update", "reinvite"):
            self._bye_after_failure(call, now, f"session refresh {reason}")

    def _bye_after_failure(self, call: Call, now: float, why: str) -> None:
        log.warning("call %s: %s; hanging up", call.call_id, why)
        if call.state is S.CONFIRMED:
            self.bye(call.call_id, now)

    def _end(self, call: Call, by: str, status: int | None, reason: str, now: float) -> None:
        if call.ended:
            return
        call.set_state(S.ENDED)
        call.refresh_at = call.expire_at = call.give_up_at = None
        # Keep the call for 64·T1 so late 2xx resends still get their ACK, then forget it.
        call.forget_at = now + 64 * self.config.timers.t1
        if call.dialog is not None and call.dialog.state.name != "TERMINATED":
            call.dialog.terminate()
        self.emit(CallEnded(call.call_id, by, status, reason, call.answered))

    # -- session timers (RFC 4028) ----------------------------------------------------------------

    def _session_timer_from_2xx(self, call: Call, resp: Response, now: float) -> None:
        try:
            se = parse_session_expires(resp.headers.get("Session-Expires"))
        except RemoteProtocolError as exc:
            # The call is up; a bad timer header must not hide that from the application.
            log.warning("call %s: ignoring %s", call.call_id, exc)
            return
        if se is None:
            return
        interval, refresher = se
        call.schedule_session_timer(interval, refresher != "uas", now)

    def _session_timer_answer(self, call: Call, req: Request, now: float) -> list[tuple[str, str]]:
        """Our 2xx to an (re-)INVITE or UPDATE: echo Session-Expires, leaving the refresh to the
        side that asked for it, else to the requester (§9)."""
        se = parse_session_expires(req.headers.get("Session-Expires"))
        if se is None:
            return []
        interval, refresher = se
        refresher = refresher or "uac"
        call.schedule_session_timer(interval, refresher == "uas", now)
        headers = [("Session-Expires", f"{interval};refresher={refresher}")]
        if "timer" in (v.lower() for v in req.headers.get_all("Supported")):
            headers.append(("Require", "timer"))  # §9: only when the UAC said it supports it
        return headers

    def _refresh_done(self, call: Call, resp: Response, now: float) -> None:
        se = parse_session_expires(resp.headers.get("Session-Expires"))
        interval = se[0] if se else call.session_expires_s
        if interval:
            call.schedule_session_timer(interval, se is None or se[1] != "uas", now)

    def call_timers(self, now: float) -> None:
        for call in list(self.calls.values()):
            if call.give_up_at is not None and call.give_up_at <= now:
                call.give_up_at = None
                self._end(call, "local", call.final_status or 487, "no answer to CANCEL", now)
            if call.refresh_at is not None and call.refresh_at <= now and call.state is S.CONFIRMED:
                call.refresh_at = None
                assert call.dialog is not None and call.session_expires_s is not None
                se = (("Session-Expires", f"{call.session_expires_s};refresher=uac"), ("Supported", "timer"))
                if "UPDATE" in call.dialog.peer_allow:
                    self._send_in_dialog(call, "UPDATE", now, se)
                else:
                    self._send_in_dialog(
                        call,
                        "INVITE",
                        now,
                        (("Contact", self.contact(call.transport)), *se),
                        call.local_sdp or b"",
                    )
            if call.expire_at is not None and call.expire_at <= now and call.state is S.CONFIRMED:
                call.expire_at = None
                self._bye_after_failure(call, now, "session expired without refresh")
            if call.ended and call.forget_at is not None and call.forget_at <= now:
                del self.calls[call.call_id]

    # -- requests from the far end ---------------------------------------------------------------

    def call_request(self, stx: ServerTransaction, req: Request, to_tag: str | None, now: float) -> None:
        method = req.method
        if method == "CANCEL":
            self._incoming_cancel(stx, req, now)
            return
        if method == "INVITE" and not to_tag:
            self._incoming_invite(stx, req, now)
            return
        call = self.calls.get(req.call_id)
        frm_tag = NameAddr.parse(req.headers.get("From") or "").tag
        dlg = call.dialog if call is not None else None
        if call is None or dlg is None or dlg.local_tag != to_tag or dlg.remote_tag != frm_tag or call.ended:
            self.respond(stx, 481, now=now)
            return
        dlg.check_remote_cseq(req)
        if method == "BYE":
            self.respond(stx, 200, now=now)
            self._end(call, "remote", call.final_status or 200, "BYE from far end", now)
        elif method in ("INVITE", "UPDATE"):
            self._incoming_refresh(call, stx, req, now)
        elif method == "INFO":
            self._incoming_info(call, stx, req, now)
        else:
            self.respond(stx, 200, now=now)  # OPTIONS, MESSAGE, NOTIFY inside the dialog

    def _incoming_invite(self, stx: ServerTransaction, req: Request, now: float) -> None:
        if req.call_id in self.calls:
            self.respond(stx, 482, "Loop Detected", now=now)
            return
        if not req.headers.get_all("Contact"):
            raise RemoteProtocolError("INVITE without Contact")  # §8.1.1.8: no target for the dialog
        tag = self.new_tag()
        self.respond(stx, 100, now=now)
        if not self.config.accept_incoming:
            self.respond(stx, 486, to_tag=tag, now=now)
            return
        sdp = _sdp_of(req)
        offer = negotiate(SessionDescription.parse(sdp), self.config.codecs) if sdp else None
        frm = NameAddr.parse(req.headers.get("From") or "")
        call = Call(req.call_id, False, S.INCOMING, req, stx.source, stx.transport, tag)
        call.server_tx = stx
        call.media = offer
        self.calls[req.call_id] = call
        self.respond(stx, 180, to_tag=tag, headers=[("Contact", self.contact(stx.transport))], now=now)
        self.emit(IncomingCall(req.call_id, str(frm.uri), frm.display, req.uri, offer))

    def _incoming_cancel(self, stx: ServerTransaction, req: Request, now: float) -> None:
        invite_key = stx.key.rsplit("/", 1)[0] + "/INVITE"
        entry = self.server_entry(invite_key)
        if entry is None:
            self.respond(stx, 481, now=now)
            return
        self.respond(stx, 200, now=now)
        call = self.calls.get(req.call_id)
        inv_tx = entry[0]
        if inv_tx.state is TxState.PROCEEDING:
            tag = call.local_tag if call is not None else self.new_tag()
            self.respond(inv_tx, 487, to_tag=tag, now=now)
            if call is not None:
                self._end(call, "remote", 487, "cancelled by caller", now)

    def _local_answer(self, call: Call, offer_sdp: bytes | None) -> bytes:
        """Our SDP answering `offer_sdp`, or a fresh offer when there was none (§14.2)."""
        call.sdp_version += 1
        if offer_sdp is None:
            body = build_offer(
                call.media_address, call.media_port, self.config.codecs, call.sdp_session_id, call.sdp_version
            ).to_bytes()
        else:
            offer = SessionDescription.parse(offer_sdp)
            media = negotiate(offer, self.config.codecs)
            call.media = media
            body = build_answer(
                offer, media, call.media_address, call.media_port, call.sdp_session_id, call.sdp_version
            ).to_bytes()
        call.local_sdp = body
        return body

    def _incoming_refresh(self, call: Call, stx: ServerTransaction, req: Request, now: float) -> None:
        """re-INVITE or UPDATE: a new offer (hold/resume/move) and/or a session refresh."""
        if req.method == "INVITE" and (
            (call.reinvite_tx is not None and call.reinvite_tx.state is TxState.PROCEEDING)
            or self._offer_pending(call)
        ):
            self.respond(stx, 491, now=now)  # §14.2: one offer at a time (glare)
            return
        before = call.media
        sdp = _sdp_of(req)
        try:
            body = self._local_answer(call, sdp) if sdp is not None or req.method == "INVITE" else b""
        except RemoteProtocolError as exc:
            self.respond(stx, exc.status_hint if exc.status_hint >= 400 else 488, now=now)
            return
        headers = [("Contact", self.contact(call.transport)), *self._session_timer_answer(call, req, now)]
        if req.method == "INVITE":
            call.reinvite_tx = stx
        self.respond(stx, 200, to_tag=call.local_tag, headers=headers, body=body, now=now)
        if sdp is not None and call.media is not None and call.media != before:
            self.emit(MediaUpdated(call.call_id, call.media))

    def _offer_pending(self, call: Call) -> bool:
        """Our own re-INVITE for `call` still waits for its final response."""
        return any(
            p.handle == call.call_id
            and p.purpose == "reinvite"
            and tx.state in (TxState.CALLING, TxState.PROCEEDING)
            for tx, p in self.client_entries()
        )

    def _incoming_info(self, call: Call, stx: ServerTransaction, req: Request, now: float) -> None:
        ctype = req.headers.get("Content-Type") or ""
        if not req.body:
            self.respond(stx, 200, now=now)  # §RFC 6086: an empty INFO is a keep-alive probe
            return
        try:
            parsed = parse_dtmf_info(ctype, req.body)
        except RemoteProtocolError as exc:
            self.respond(stx, 400, str(exc)[:60], now=now)
            return
        if parsed is None:
            self.respond(stx, 415, headers=[("Accept", "application/dtmf-relay, application/dtmf")], now=now)
            return
        self.respond(stx, 200, now=now)
        self.emit(DtmfReceived(call.call_id, parsed[0], parsed[1]))

    def ack_received(self, req: Request, now: float) -> None:
        call = self.calls.get(req.call_id)
        if call is None:
            return
        seq = (req.headers.get("CSeq") or "").split()[0]
        for stx in (call.server_tx, call.reinvite_tx):
            if stx is not None and (stx.request.headers.get("CSeq") or "").split()[0] == seq:
                stx.ack_received(now)
        reinvite = call.reinvite_tx
        if (
            call.state is S.CONFIRMED
            and reinvite is not None
            and (reinvite.request.headers.get("CSeq") or "").split()[0] == seq
            and _sdp_of(reinvite.request) is None
            and (sdp := _sdp_of(req)) is not None
        ):
            # §14.2: an offer-less re-INVITE got our offer in the 200; the answer is in the ACK.
            before = call.media
            try:
                call.media = negotiate(SessionDescription.parse(sdp), self.config.codecs)
            except ProtocolError as exc:
                log.warning("call %s: unusable answer in ACK: %s", call.call_id, exc)
                return
            if call.media != before:
                self.emit(MediaUpdated(call.call_id, call.media))
            return
        if call.state is S.ANSWERING:
            sdp = _sdp_of(req)
            if sdp is not None and _sdp_of(call.invite) is None:
                call.media = negotiate(SessionDescription.parse(sdp), self.config.codecs)
            call.answered = True
            call.final_status = 200
            call.set_state(S.CONFIRMED)
            if call.media is not None:
                self.emit(CallAnswered(call.call_id, call.media))
            else:
                self.bye(call.call_id, now)

    def server_timed_out(self, stx: ServerTransaction, now: float) -> None:
        call = self.calls.get(stx.request.call_id)
        if call is None or stx.method != "INVITE":
            return
        if call.state is S.ANSWERING and stx is call.server_tx:
            log.warning("call %s: our 200 OK was never ACKed (§13.3.1.4)", call.call_id)
            self.bye(call.call_id, now)
