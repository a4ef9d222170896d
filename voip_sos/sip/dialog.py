"""SIP dialogs (RFC 3261 §12): identity, route set, remote target and CSeq of one call.

How this works: a dialog is created from a 1xx-with-tag/2xx to our INVITE (UAC, §12.1.2) or from a
received INVITE we answer (UAS, §12.1.1). The route set is the Record-Route list, reversed for the
UAC; the remote target is the peer's Contact and is updated by target-refresh requests (re-INVITE,
UPDATE). `create_request()` builds in-dialog requests with the right Route headers (loose routing,
or §12.2.1.1 strict routing when the first route lacks `lr`) and the next local CSeq. ACK for a
2xx is its own request with the INVITE's CSeq number (§13.2.2.4). `export()` / `restore()` carry
the state over a process restart so a left-over call can still be ended with BYE.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

from voip_sos.errors import LocalProtocolError, RemoteProtocolError
from voip_sos.sip.headers import NameAddr, SipUri
from voip_sos.sip.message import Headers, Request, Response

__all__ = ["Dialog", "DialogState"]

log = logging.getLogger(__name__)


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


_TRANSITIONS: dict[DialogState, frozenset[DialogState]] = {
    DialogState.EARLY: frozenset({DialogState.CONFIRMED, DialogState.TERMINATED}),
    DialogState.CONFIRMED: frozenset({DialogState.TERMINATED}),
    DialogState.TERMINATED: frozenset(),
}


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    """our From (UAC) / To (UAS) as a name-addr without tag"""
    remote_uri: str
    local_seq: int
    remote_seq: int | None
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    transport: str = "UDP"
    state: DialogState = DialogState.EARLY
    peer_allow: tuple[str, ...] = ()

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def _set_state(self, new: DialogState) -> None:
        if new is self.state:
            return
        if new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"dialog {self.call_id}: illegal move {self.state.name} -> {new.name}")
        log.debug("dialog %s: %s -> %s", self.call_id, self.state.name, new.name)
        self.state = new

    def confirm(self) -> None:
        self._set_state(DialogState.CONFIRMED)

    def terminate(self) -> None:
        self._set_state(DialogState.TERMINATED)

    @classmethod
    def from_uac(cls, invite: Request, response: Response, transport: str) -> Dialog:
        """§12.1.2: built from a response (1xx with To tag, or 2xx) to our INVITE."""
        to = NameAddr.parse(response.headers.get("To") or "", "To")
        frm = NameAddr.parse(invite.headers.get("From") or "", "From")
        if not to.tag:
            raise RemoteProtocolError("response creating a dialog has no To tag")
        contact = response.headers.get_all("Contact")
        target = str(NameAddr.parse(contact[0], "Contact").uri) if contact else invite.uri
        routes = list(reversed(response.headers.get_all("Record-Route")))
        dlg = cls(
            call_id=invite.call_id,
            local_tag=frm.tag or "",
            remote_tag=to.tag,
            local_uri=str(NameAddr(frm.uri, frm.display)),
            remote_uri=str(NameAddr(to.uri, to.display)),
            local_seq=int((invite.headers.get("CSeq") or "1").split()[0]),
            remote_seq=None,
            remote_target=target,
            route_set=routes,
            transport=transport,
            peer_allow=_allow(response),
        )
        if 200 <= response.status < 300:
            dlg.confirm()
        return dlg

    @classmethod
    def from_uas(cls, invite: Request, local_tag: str, transport: str, local_seq: int) -> Dialog:
        """§12.1.1: built when we answer a received INVITE."""
        frm = NameAddr.parse(invite.headers.get("From") or "", "From")
        to = NameAddr.parse(invite.headers.get("To") or "", "To")
        contact = invite.headers.get_all("Contact")
        if not contact:
            raise RemoteProtocolError("INVITE without Contact")
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=frm.tag or "",
            local_uri=str(NameAddr(to.uri, to.display)),
            remote_uri=str(NameAddr(frm.uri, frm.display)),
            local_seq=local_seq,
            remote_seq=int((invite.headers.get("CSeq") or "0").split()[0]),
            remote_target=str(NameAddr.parse(contact[0], "Contact").uri),
            route_set=invite.headers.get_all("Record-Route"),
            transport=transport,
            peer_allow=_allow(invite),
        )

    def update_from_response(self, response: Response) -> None:
        """2xx to a target refresh, or the 2xx confirming an early dialog: new target/route set."""
        contact = response.headers.get_all("Contact")
        if contact:
            self.remote_target = str(NameAddr.parse(contact[0], "Contact").uri)
        if self.state is DialogState.EARLY and 200 <= response.status < 300:
            # §12.1.2: the route set is fixed by the 2xx, not by earlier provisionals.
            self.route_set = list(reversed(response.headers.get_all("Record-Route")))
            self.peer_allow = _allow(response) or self.peer_allow
            self.confirm()

    def check_remote_cseq(self, request: Request) -> None:
        """§12.2.2: a lower CSeq than the last one is out of order (500); else remember it."""
        seq = int((request.headers.get("CSeq") or "0").split()[0])
        if request.method in ("ACK", "CANCEL"):
            return
        if self.remote_seq is not None and seq <= self.remote_seq:
            raise RemoteProtocolError(f"CSeq {seq} not above {self.remote_seq}", 500)
        self.remote_seq = seq
        if request.method in ("INVITE", "UPDATE"):
            contact = request.headers.get_all("Contact")
            if contact:
                self.remote_target = str(NameAddr.parse(contact[0], "Contact").uri)

    def next_cseq(self) -> int:
        self.local_seq += 1
        return self.local_seq

    def create_request(self, method: str, via: str, cseq: int | None = None) -> Request:
        """An in-dialog request: next CSeq (or `cseq` for ACK), Route set, To/From with tags."""
        if self.state is DialogState.TERMINATED and method not in ("ACK",):
            raise LocalProtocolError(f"{method} on terminated dialog {self.call_id}")
        seq = cseq if cseq is not None else self.next_cseq()
        uri = self.remote_target
        routes = list(self.route_set)
        if routes:
            first = NameAddr.parse(routes[0], "Route")
            if "lr" not in first.uri.params:
                # §12.2.1.1 strict routing: the first route becomes the Request-URI.
                uri = str(SipUri.parse(str(first.uri)))
                routes = [*routes[1:], f"<{self.remote_target}>"]
        h = Headers()
        h.add("Via", via)
        h.add("Max-Forwards", "70")
        for r in routes:
            h.add("Route", r)
        h.add("From", f"{self.local_uri};tag={self.local_tag}")
        h.add("To", f"{self.remote_uri};tag={self.remote_tag}")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{seq} {method}")
        return Request(headers=h, method=method, uri=uri)

    def next_hop_uri(self) -> SipUri:
        """Where in-dialog requests go (§8.1.2): the first route, else the remote target."""
        if self.route_set:
            return NameAddr.parse(self.route_set[0], "Route").uri
        return SipUri.parse(self.remote_target)

    def export(self) -> dict[str, Any]:
        """Plain data (JSON-safe) to store beside the call."""
        return {
            "call_id": self.call_id,
            "local_tag": self.local_tag,
            "remote_tag": self.remote_tag,
            "local_uri": self.local_uri,
            "remote_uri": self.remote_uri,
            "local_seq": self.local_seq,
            "remote_seq": self.remote_seq,
            "remote_target": self.remote_target,
            "route_set": list(self.route_set),
            "transport": self.transport,
            "state": self.state.value,
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Dialog:
        try:
            return cls(
                call_id=str(data["call_id"]),
                local_tag=str(data["local_tag"]),
                remote_tag=str(data["remote_tag"]),
                local_uri=str(data["local_uri"]),
                remote_uri=str(data["remote_uri"]),
                local_seq=int(data["local_seq"]),
                remote_seq=None if data.get("remote_seq") is None else int(data["remote_seq"]),
                remote_target=str(data["remote_target"]),
                route_set=[str(r) for r in data.get("route_set", [])],
                transport=str(data.get("transport", "UDP")),
                state=DialogState(data.get("state", "confirmed")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise LocalProtocolError(f"cannot restore dialog: {exc!r}") from None


def _allow(msg: Request | Response) -> tuple[str, ...]:
    return tuple(v.strip().upper() for v in msg.headers.get_all("Allow"))
