"""PIDF-LO civic location (RFC 4119, RFC 5139 civic address, RFC 5491 profile) and the
`Geolocation` header that points at it (RFC 6442 §4.1).

The emergency centre may read the caller's address as data: a `multipart/mixed` INVITE carries the
SDP and this document, referenced by `Geolocation: <cid:…>`. Built with ElementTree so every value
is escaped; the timestamp is passed in (an ISO 8601 string) since cores never read the clock.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields

from voip_sos.errors import RemoteProtocolError

__all__ = [
    "PIDF_CONTENT_TYPE",
    "CivicAddress",
    "build_pidf_lo",
    "geolocation_headers",
    "parse_pidf_lo",
]

PIDF_CONTENT_TYPE = "application/pidf+xml"
NS_PIDF = "urn:ietf:params:xml:ns:pidf"
NS_GP = "urn:ietf:params:xml:ns:pidf:geopriv10"
NS_CA = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
NS_DM = "urn:ietf:params:xml:ns:pidf:data-model"


@dataclass(frozen=True, slots=True)
class CivicAddress:
    """RFC 5139 §3.1 elements; empty ones are left out of the document."""

    country: str = ""
    A1: str = ""
    """national subdivision (province, state)"""
    A2: str = ""
    """county, parish, city-level division"""
    A3: str = ""
    """city, township"""
    A4: str = ""
    """city division, district"""
    A5: str = ""
    """neighbourhood, block"""
    A6: str = ""
    """street (RFC 5139 prefers RD)"""
    RD: str = ""
    HNO: str = ""
    HNS: str = ""
    LMK: str = ""
    LOC: str = ""
    FLR: str = ""
    NAM: str = ""
    PC: str = ""
    BLD: str = ""
    UNIT: str = ""
    ROOM: str = ""
    PCN: str = ""
    language: str = "en"


def build_pidf_lo(entity: str, civic: CivicAddress, timestamp: str, method: str = "Manual") -> bytes:
    """A PIDF-LO document: one tuple, one civic location (RFC 5491 §3.2 puts it in a
    `dm:device` for a device's location; a tuple is equally valid and what most PSAPs parse)."""
    ET.register_namespace("", NS_PIDF)
    ET.register_namespace("gp", NS_GP)
    ET.register_namespace("ca", NS_CA)
    ET.register_namespace("dm", NS_DM)
    root = ET.Element(f"{{{NS_PIDF}}}presence", {"entity": entity})
    tup = ET.SubElement(root, f"{{{NS_PIDF}}}tuple", {"id": "sos"})
    status = ET.SubElement(tup, f"{{{NS_PIDF}}}status")
    geopriv = ET.SubElement(status, f"{{{NS_GP}}}geopriv")
    info = ET.SubElement(geopriv, f"{{{NS_GP}}}location-info")
    addr = ET.SubElement(
        info, f"{{{NS_CA}}}civicAddress", {"{http://www.w3.org/XML/1998/namespace}lang": civic.language}
    )
    for f in fields(civic):
        if f.name == "language":
            continue
        value = getattr(civic, f.name)
        if value:
            ET.SubElement(addr, f"{{{NS_CA}}}{f.name}").text = value
    usage = ET.SubElement(geopriv, f"{{{NS_GP}}}usage-rules")
    # RFC 4119 §2.2.2: retransmission is what a PSAP needs (it forwards to responders).
    ET.SubElement(usage, f"{{{NS_GP}}}retransmission-allowed").text = "yes"
    ET.SubElement(usage, f"{{{NS_GP}}}retention-expiry").text = timestamp
    ET.SubElement(geopriv, f"{{{NS_GP}}}method").text = method
    ET.SubElement(tup, f"{{{NS_PIDF}}}timestamp").text = timestamp
    doc: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + doc


def parse_pidf_lo(data: bytes) -> tuple[str, CivicAddress]:
    """(entity, civic address) of a PIDF-LO document; used by tests and by call-backs."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise RemoteProtocolError(f"malformed PIDF-LO: {exc}") from None
    if root.tag != f"{{{NS_PIDF}}}presence":
        raise RemoteProtocolError("PIDF-LO root is not presence")
    addr = root.find(f".//{{{NS_CA}}}civicAddress")
    if addr is None:
        raise RemoteProtocolError("PIDF-LO without civicAddress")
    values: dict[str, str] = {}
    for child in addr:
        name = child.tag.split("}", 1)[-1]
        if name in CivicAddress.__dataclass_fields__ and name != "language":
            values[name] = child.text or ""
    lang = addr.get("{http://www.w3.org/XML/1998/namespace}lang") or "en"
    return root.get("entity", ""), CivicAddress(**values, language=lang)


def geolocation_headers(content_id: str) -> list[tuple[str, str]]:
    """RFC 6442 §4.1/§4.2: point at the body part and allow routing on it."""
    return [("Geolocation", f"<cid:{content_id}>"), ("Geolocation-Routing", "yes")]
