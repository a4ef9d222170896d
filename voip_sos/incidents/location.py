"""The subscriber's home as a civic location for the centre's INVITE (PIDF-LO, RFC 4119/5139/5491).

Directory parts map onto RFC 5139 elements: province -> A1, city -> A3, district -> A4, street ->
RD, number -> HNO, building -> BLD, unit -> UNIT, floor -> FLR, room -> ROOM; the whole address line
goes into LOC (additional location information) so a centre always has the full text, and the
subscriber's name into NAM.
"""

from __future__ import annotations

from datetime import UTC, datetime

from voip_sos.directory.records import Subscriber
from voip_sos.sip import CivicAddress, Location

__all__ = ["civic_address", "location_of"]

# Country of the deployment's addresses; the directory holds no country column (one operator, one
# country). "CN" for the original deployment.
COUNTRY_OF_LANGUAGE = {"zh": "CN"}


def civic_address(sub: Subscriber) -> CivicAddress:
    a = sub.address
    return CivicAddress(
        country=COUNTRY_OF_LANGUAGE.get(sub.language, ""),
        A1=a.province,
        A3=a.city,
        A4=a.district,
        RD=a.street,
        HNO=a.number,
        BLD=a.building,
        UNIT=a.unit,
        FLR=a.floor,
        ROOM=a.room,
        LOC=a.line,
        NAM=sub.name,
        language="zh" if sub.language == "zh" else "en",
    )


def location_of(sub: Subscriber, incident_id: int, domain: str, now: datetime | None = None) -> Location:
    """The Location for the INVITE: entity names the subscriber, timestamp is now (RFC 3339)."""
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Location(f"pres:{sub.uid}@{domain}", civic_address(sub), when)
