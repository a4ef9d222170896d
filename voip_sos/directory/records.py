"""Plain records the directory hands out: subscribers, their STBs and contacts (never ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["ADDRESS_PARTS", "Address", "Contact", "Stb", "StbMatch", "Subscriber"]

# Structured address parts, in the order they are spoken and printed (largest to smallest).
ADDRESS_PARTS = ("province", "city", "district", "street", "number", "building", "unit", "floor", "room")


@dataclass(frozen=True, slots=True)
class Address:
    """A home address: one free-text line plus optional structured parts ("" when unknown)."""

    line: str
    province: str = ""
    city: str = ""
    district: str = ""
    street: str = ""
    number: str = ""
    building: str = ""
    unit: str = ""
    floor: str = ""
    room: str = ""

    def full(self) -> str:
        """The address as one line for an SMS: the line, then building/unit/floor/room if set."""
        extra = [
            f"{label} {value}"
            for label, value in (
                ("building", self.building),
                ("unit", self.unit),
                ("floor", self.floor),
                ("room", self.room),
            )
            if value
        ]
        return ", ".join([self.line, *extra]) if extra else self.line


@dataclass(frozen=True, slots=True)
class Contact:
    """An emergency contact; the subscriber's tuple of contacts is in call order."""

    name: str
    phone: str


@dataclass(frozen=True, slots=True)
class Stb:
    """A set-top box: its fixed IP (normalised text form) and optional per-STB HMAC secret."""

    ip: str
    secret: bytes | None = field(default=None, repr=False)
    last_seen_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One subscriber of the SOS service (F1)."""

    uid: str
    name: str
    language: str
    address: Address
    contacts: tuple[Contact, ...]
    stbs: tuple[Stb, ...]
    notes: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    hub_id: str | None = None
    """The home hub's id (its MQTT topic level, docs/hub-protocol.md §7); None: no hub in this home."""


@dataclass(frozen=True, slots=True)
class StbMatch:
    """Result of an STB lookup (F3): the subscriber and the STB whose IP matched."""

    subscriber: Subscriber
    stb: Stb
