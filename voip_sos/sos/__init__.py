"""The STB <-> backend SOS protocol: wire format (`wire`), listener core (`listener`), events, retries."""

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
from voip_sos.sos.listener import DROP_REASONS, ListenerSettings, SosListener
from voip_sos.sos.retry import RetrySchedule
from voip_sos.sos.wire import Flag, Message, MsgType, RejectReason, StatusCode, encode, parse

__all__ = [
    "DROP_REASONS",
    "Addr",
    "Event",
    "Flag",
    "ListenerSettings",
    "Message",
    "MsgType",
    "ReceiptSent",
    "RejectReason",
    "RejectSent",
    "RequestAuthenticated",
    "RequestParsed",
    "RetrySchedule",
    "SosListener",
    "StatusAbandoned",
    "StatusCode",
    "StatusSeen",
    "StatusSent",
    "encode",
    "parse",
]
