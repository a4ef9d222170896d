"""The backend <-> hub MQTT contract (sans-IO): topic names, command and event payloads.

    voip-sos/hub/<hub-id>/cmd/context   backend -> hub   incident context (uid, address, contact)
    voip-sos/hub/<hub-id>/cmd/revoke    backend -> hub   clear every temporary code (F12)
    voip-sos/hub/<hub-id>/event/<kind>  hub -> backend   door_code, parking_pass, failed, revoked, expired,
                                                         camera (buffer health), clip (clip upload outcome)
    voip-sos/hub/<hub-id>/status        hub -> backend   "online" / "offline" (retained; will message)

Payloads are JSON objects, QoS 1. The broker's ACL lets each hub read only its own `cmd/#` and
write only its own `event/#` and `status` (docs/hub-protocol.md §8). Both sides use these functions,
so the topic layout lives in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PREFIX",
    "EventKind",
    "HubEvent",
    "IncidentContext",
    "cmd_topic",
    "event_topic",
    "parse_event",
    "status_topic",
]

PREFIX = "voip-sos/hub"


class EventKind:
    """Event names (the last topic level)."""

    DOOR_CODE = "door_code"
    PARKING_PASS = "parking_pass"
    FAILED = "failed"
    REVOKED = "revoked"
    EXPIRED = "expired"
    CAMERA = "camera"
    CLIP = "clip"
    ALL = frozenset({DOOR_CODE, PARKING_PASS, FAILED, REVOKED, EXPIRED, CAMERA, CLIP})


def cmd_topic(hub_id: str, command: str) -> str:
    return f"{PREFIX}/{hub_id}/cmd/{command}"


def event_topic(hub_id: str, kind: str) -> str:
    return f"{PREFIX}/{hub_id}/event/{kind}"


def status_topic(hub_id: str) -> str:
    return f"{PREFIX}/{hub_id}/status"


@dataclass(frozen=True, slots=True)
class IncidentContext:
    """What the backend tells a hub when an SOS from its home arrives (for the parking pass)."""

    incident: str
    """The backend's incident id (echoed in the hub's events, so codes land on the right incident)."""
    uid: str
    """Subscriber id (Uid1)."""
    address: str
    """Home address (Uad1)."""
    contact_phone: str
    """First emergency contact."""
    upload_url: str | None = None
    """Where this incident's camera clips go: `<upload_url>/<camera>/<part>` (docs/clip.md)."""
    upload_token: str | None = None
    """Bearer token for those uploads: bound to this incident, expires; the broker's ACL keeps it
    to this hub."""

    def to_json(self) -> bytes:
        body: dict[str, str] = {
            "incident": self.incident,
            "uid": self.uid,
            "address": self.address,
            "contact_phone": self.contact_phone,
        }
        if self.upload_url and self.upload_token:
            body["upload_url"] = self.upload_url
            body["upload_token"] = self.upload_token
        return json.dumps(body, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> IncidentContext:
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("context is not a JSON object")
        values = {k: data.get(k) for k in ("incident", "uid", "address", "contact_phone")}
        if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values.values()):
            raise ValueError("context needs incident, uid, address and contact_phone")
        url, token = data.get("upload_url"), data.get("upload_token")
        if not (url is None or isinstance(url, str)) or not (token is None or isinstance(token, str)):
            raise ValueError("context upload_url and upload_token must be strings")
        return cls(**{k: str(v) for k, v in values.items()}, upload_url=url, upload_token=token)


@dataclass(frozen=True, slots=True)
class HubEvent:
    """One event a hub reported (or its status change), as the backend receives it."""

    hub_id: str
    """Which hub (from the topic, which the broker's ACL vouches for -- never from the payload)."""
    kind: str
    """door_code, parking_pass, failed, revoked, expired, or status."""
    data: dict[str, Any] = field(default_factory=dict)
    """The JSON payload (for status: {"state": "online" | "offline"})."""
    received_at: float = 0.0
    """When the backend's link received it (event-loop monotonic time; 0 when not set)."""

    @property
    def incident(self) -> str | None:
        value = self.data.get("incident")
        return None if value is None else str(value)


def parse_event(topic: str, payload: bytes, received_at: float = 0.0) -> HubEvent | None:
    """The event a hub published on `topic`, or None when the topic or payload is not one."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != PREFIX:
        return None
    hub_id = parts[2]
    if len(parts) == 4 and parts[3] == "status":
        return HubEvent(hub_id, "status", {"state": payload.decode("utf-8", "replace")}, received_at)
    if len(parts) != 5 or parts[3] != "event" or parts[4] not in EventKind.ALL:
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return HubEvent(hub_id, parts[4], data, received_at) if isinstance(data, dict) else None
