"""SIP user agent core (RFC 3261 and friends), sans-IO: no sockets, no clock, no asyncio here."""

from voip_sos.sip.agent import AgentConfig, Outgoing
from voip_sos.sip.agent_calls import Location, SipAgent
from voip_sos.sip.call import CallState
from voip_sos.sip.dialog import Dialog
from voip_sos.sip.events import (
    CallAnswered,
    CallEnded,
    CallProgressed,
    DtmfReceived,
    Event,
    IncomingCall,
    MediaUpdated,
    MessageReceived,
    MessageResult,
    RegistrationChanged,
)
from voip_sos.sip.pidf import CivicAddress
from voip_sos.sip.sdp import MediaParams
from voip_sos.sip.transaction import TimerConfig

__all__ = [
    "AgentConfig",
    "CallAnswered",
    "CallEnded",
    "CallProgressed",
    "CallState",
    "CivicAddress",
    "Dialog",
    "DtmfReceived",
    "Event",
    "IncomingCall",
    "Location",
    "MediaParams",
    "MediaUpdated",
    "MessageReceived",
    "MessageResult",
    "Outgoing",
    "RegistrationChanged",
    "SipAgent",
    "TimerConfig",
]
