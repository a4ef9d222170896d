"""The home hub: temporary door codes, parking pass and revoke (SPEC F8, F12, F13).

Sans-IO cores: `wire` (STB <-> hub datagrams), `listener` (hub side), `client` (STB side), `slots`
(temporary codes in reserved lock slots), `topics` (backend <-> hub MQTT contract). Adapters:
`aio` (UDP), `locks` (Zigbee2MQTT, Home Assistant), `parking` (HTTP), `uplink` (hub's MQTT link),
`link` (the backend's MQTT client), `store` (state file); `service` runs one hub.
docs/hub-protocol.md and docs/parking-api.md are the specifications.
"""

from __future__ import annotations

from voip_sos.hub.aio import HubClientEndpoint, HubEndpoint, open_hub_client, open_hub_endpoint
from voip_sos.hub.client import HubClient
from voip_sos.hub.config import HubConfig, load_hub_config
from voip_sos.hub.events import (
    CodesReceived,
    DatagramDropped,
    InstructionReceived,
    RequestTimedOut,
    RevokeConfirmed,
    RevokeRequested,
)
from voip_sos.hub.link import HubLink, HubLinkError, RevokeResult
from voip_sos.hub.listener import CodesReply, HubListener
from voip_sos.hub.locks import HomeAssistantLock, Lock, LockError, Zigbee2MqttLock
from voip_sos.hub.parking import ParkingClient, ParkingError, ParkingPass
from voip_sos.hub.service import HubService, RevokeOutcome
from voip_sos.hub.slots import CodeState, SlotTable, TempCode
from voip_sos.hub.topics import EventKind, HubEvent, IncidentContext
from voip_sos.hub.wire import PartState

__all__ = [
    "CodeState",
    "CodesReceived",
    "CodesReply",
    "DatagramDropped",
    "EventKind",
    "HomeAssistantLock",
    "HubClient",
    "HubClientEndpoint",
    "HubConfig",
    "HubEndpoint",
    "HubEvent",
    "HubLink",
    "HubLinkError",
    "HubListener",
    "HubService",
    "IncidentContext",
    "InstructionReceived",
    "Lock",
    "LockError",
    "ParkingClient",
    "ParkingError",
    "ParkingPass",
    "PartState",
    "RequestTimedOut",
    "RevokeConfirmed",
    "RevokeOutcome",
    "RevokeRequested",
    "RevokeResult",
    "SlotTable",
    "TempCode",
    "Zigbee2MqttLock",
    "load_hub_config",
    "open_hub_client",
    "open_hub_endpoint",
]
