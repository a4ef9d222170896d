"""Field rules of the directory: each parser returns the normalised value or raises FieldError.

Shared by the CLI and the CSV importer, so a value is accepted or refused the same way and with the
same words wherever it comes from.
"""

from __future__ import annotations

import ipaddress
import re

from voip_sos.directory.records import Contact

__all__ = [
    "LANGUAGES",
    "FieldError",
    "normalize_ip",
    "parse_contact",
    "parse_contacts",
    "parse_hub_id",
    "parse_ips",
    "parse_language",
    "parse_phone",
    "parse_secret",
    "parse_text",
    "parse_uid",
]

LANGUAGES = ("en", "zh")
MAX_TEXT_CHARS = 200
MAX_NOTES_CHARS = 4000
MAX_CONTACTS = 10
MAX_STBS = 8
# Per-STB HMAC-SHA256 keys: at least 128 bits, at most one SHA-256 block (64 bytes).
SECRET_MIN_BYTES = 16
SECRET_MAX_BYTES = 64

_UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Digits, * and # (service codes), an optional leading +, and at least one digit.
_PHONE_RE = re.compile(r"^\+?(?=[*#]*[0-9])[0-9*#]{1,32}$")
# The hub's own rule (voip_sos.hub.config): an MQTT topic level and broker username.
_HUB_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
_IPV4_RE = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class FieldError(ValueError):
    """A value refused; `column` names the field, str() says what is wrong with which value."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


def _q(value: str) -> str:
    return '"' + value.replace('"', '\\"') + '"'


def parse_uid(value: str) -> str:
    text = value.strip()
    if not _UID_RE.match(text):
        raise FieldError("uid", f"{_q(value)} is not a subscriber id (letters, digits, . _ -; at most 64)")
    return text


def parse_text(column: str, value: str, *, required: bool = False, limit: int = MAX_TEXT_CHARS) -> str:
    """Free text: runs of white space folded to one space (notes keep their line breaks)."""
    if not value:
        if required:
            raise FieldError(column, "must not be empty")
        return ""
    text = " ".join(value.split()) if column != "notes" else value.strip()
    if required and not text:
        raise FieldError(column, "must not be empty")
    if len(text) > limit:
        raise FieldError(column, f"is {len(text)} characters long, at most {limit} allowed")
    if _CONTROL_RE.search(text):
        raise FieldError(column, f"{_q(value)} contains control characters")
    return text


def parse_language(value: str, default: str) -> str:
    text = value.strip().lower() or default
    if text not in LANGUAGES:
        raise FieldError("language", f"{_q(value)} is not a supported language ({', '.join(LANGUAGES)})")
    return text


def normalize_ip(value: str, column: str = "stb_ip") -> str:
    """The canonical text form of an IP; IPv4-mapped IPv6 becomes IPv4 (dual-stack sockets show it)."""
    text = value.strip()
    m = _IPV4_RE.match(text)
    if m and all(int(o) < 256 and (o == "0" or o[0] != "0") for o in m.groups()):
        return text  # the common case, without ipaddress's heavier parse
    try:
        if "%" in text:
            raise ValueError
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise FieldError(column, f"{_q(value)} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.compressed


def parse_phone(value: str, column: str = "contacts") -> str:
    text = value.strip()
    if not _PHONE_RE.match(text):
        raise FieldError(
            column, f"{_q(value)} is not a phone number (digits with optional leading +, and * or #)"
        )
    return text


def parse_contact(value: str, column: str = "contacts") -> Contact:
    """`NAME=PHONE`, the form of the CLI's --contact and of the CSV's contacts column."""
    name, sep, phone = value.partition("=")
    if not sep:
        raise FieldError(column, f"{_q(value)} is not NAME=PHONE")
    name = " ".join(name.split())
    if not name:
        raise FieldError(column, f"{_q(value)} has no name before '='")
    if ";" in name or len(name) > MAX_TEXT_CHARS:
        raise FieldError(column, f"{_q(name)} is not a usable contact name")
    return Contact(name=name, phone=parse_phone(phone, column))


def parse_contacts(values: list[str], column: str = "contacts") -> tuple[Contact, ...]:
    contacts = tuple(parse_contact(v, column) for v in values if v.strip())
    if not contacts:
        raise FieldError(column, "at least one contact NAME=PHONE is needed")
    if len(contacts) > MAX_CONTACTS:
        raise FieldError(column, f"{len(contacts)} contacts given, at most {MAX_CONTACTS} allowed")
    return contacts


def parse_ips(values: list[str], column: str = "stb_ip") -> tuple[str, ...]:
    ips = tuple(normalize_ip(v, column) for v in values if v.strip())
    if not ips:
        raise FieldError(column, "at least one STB IP is needed")
    if len(ips) > MAX_STBS:
        raise FieldError(column, f"{len(ips)} STB IPs given, at most {MAX_STBS} allowed")
    seen: set[str] = set()
    for ip in ips:
        if ip in seen:
            raise FieldError(column, f"{ip} is given twice")
        seen.add(ip)
    return ips


def parse_secret(value: str, column: str = "stb_secret") -> bytes | None:
    """Hex text -> key bytes; "" means no per-STB secret."""
    text = value.strip()
    if not text:
        return None
    if not _HEX_RE.match(text) or len(text) % 2:
        raise FieldError(column, "is not hex (an even number of 0-9 a-f digits)")
    n = len(text) // 2
    if not SECRET_MIN_BYTES <= n <= SECRET_MAX_BYTES:
        raise FieldError(column, f"is {n} bytes, expected {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES}")
    return bytes.fromhex(text)


def parse_hub_id(value: str, column: str = "hub_id") -> str | None:
    """A home hub's id ("" means none): a-z, 0-9 and '-', as the hub's `hub.id` and its topics use it."""
    text = value.strip()
    if not text:
        return None
    if not _HUB_ID_RE.match(text):
        raise FieldError(column, f"{_q(value)} is not a hub id (a-z, 0-9, '-'; at most 63; no leading '-')")
    return text
