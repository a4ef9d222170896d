"""Configuration values: the parsers every key uses, addresses, and the `key()` declaration.

Each parser takes a YAML value (or the raw string of an environment variable) and returns the typed
value or raises ValueError saying what was expected and what was given; `voip_sos.config` adds the
dotted key and the file line. Shared by the backend's and the home hub's configuration.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


@dataclass(frozen=True, slots=True)
class HostPort:
    """An address to bind or to reach: host name or IP literal, and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive range of UDP ports."""

    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


# ---------------------------------------------------------------------------------------------
# Parsers: each takes a YAML value (or the raw string of an environment variable) and returns the
# typed value or raises ValueError with a message that says what was expected and what was given.


def _show(value: object) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST_RE.match(host))


def parse_hostport(value: object) -> HostPort:
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT, got {_show(value)}")
    text = value.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})", text) or re.fullmatch(r"([^:\[\]]+):(\d{1,5})", text)
    if not m or not _valid_host(m.group(1)) or not 0 < int(m.group(2)) < 65536:
        raise ValueError(f"expected HOST:PORT, got {_show(value)}")
    return HostPort(m.group(1), int(m.group(2)))


def parse_optional_hostport(value: object) -> HostPort | None:
    if value is None or value == "":
        return None
    return parse_hostport(value)


def parse_port_range(value: object) -> PortRange:
    m = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"expected a port range FIRST-LAST, got {_show(value)}")
    first, last = int(m.group(1)), int(m.group(2))
    if not (1024 <= first <= last <= 65535):
        raise ValueError(f"expected 1024 <= FIRST <= LAST <= 65535, got {_show(value)}")
    if first % 2:
        # RFC 3550 §11: RTP takes the even port, RTCP the odd one above it.
        raise ValueError(f"FIRST must be even (RTP uses even ports), got {_show(value)}")
    if last - first < 1:
        raise ValueError(f"range must hold at least one RTP/RTCP port pair, got {_show(value)}")
    return PortRange(first, last)


def parse_str(value: object) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise ValueError(f"expected a string, got {_show(value)}")
    return str(value)


def parse_optional_str(value: object) -> str | None:
    if value is None or value == "":
        return None
    return parse_str(value)


_PHONE_RE = re.compile(r"^\+?[0-9*#]{1,32}$")


def parse_optional_phone(value: object) -> str | None:
    if value is None or value == "":
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _PHONE_RE.match(text) or not any(c.isdigit() for c in text):
        raise ValueError(f"expected a phone number (digits, optional leading +, * and #), got {_show(value)}")
    return text


def parse_positive_int(value: object) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"expected a positive whole number, got {_show(value)}")
    return value


def parse_positive_float(value: object) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a positive number, got {_show(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ValueError(f"expected a positive number, got {_show(value)}")
    return float(value)


def parse_non_negative_float(value: object) -> float:
    """A number >= 0 (a duration where 0 means "at once")."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number >= 0, got {_show(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ValueError(f"expected a number >= 0, got {_show(value)}")
    return float(value)


def parse_count(value: object) -> int:
    """A whole number >= 0 (e.g. how many redials)."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {_show(value)}")
    return value


def parse_optional_ip(value: object) -> str | None:
    if value is None or value == "":
        return None
    try:
        return ipaddress.ip_address(str(value)).compressed
    except ValueError:
        raise ValueError(f"expected an IP address, got {_show(value)}") from None


def parse_url(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"expected an http:// or https:// URL, got {_show(value)}")
    return value.rstrip("/")


def parse_db_url(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^(sqlite\+aiosqlite|postgresql\+asyncpg)://", value):
        raise ValueError(
            f"expected sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB, got {_show(value)}"
        )
    return value


def _json_if_str(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def one_of(*choices: str, lower: bool = True) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = value.lower() if isinstance(value, str) and lower else value
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {_show(value)}")
        assert isinstance(text, str)
        return text

    return parse


def list_of(item: Callable[[object], str], *, non_empty: bool = True) -> Callable[[object], tuple[str, ...]]:
    def parse(value: object) -> tuple[str, ...]:
        value = _json_if_str(value)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or (non_empty and not value):
            raise ValueError(f"expected a non-empty list, got {_show(value)}")
        items = [item(v) for v in value]
        if len(set(items)) != len(items):
            raise ValueError(f"list has duplicates: {_show(value)}")
        return tuple(items)

    return parse


def map_of_str(value: object) -> dict[str, str]:
    value = _json_if_str(value)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {_show(value)}")
    return {str(k): parse_str(v) for k, v in value.items()}


# ---------------------------------------------------------------------------------------------
# Path resolution: relative paths are relative to the config file's folder, not to the cwd, so a
# service started from anywhere finds the same files.


def _resolve_path(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_optional_path(value: str | None, base: Path) -> str | None:
    return None if value is None else _resolve_path(value, base)


def _resolve_db_url(value: str, base: Path) -> str:
    prefix = "sqlite+aiosqlite:///"
    if value.startswith(prefix):
        rest = value[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith("/"):
            return prefix + _resolve_path(rest, base)
    return value


SHIPPED_AUDIO_DIR = Path(__file__).resolve().parent.parent / "audio"


def _resolve_fallback_dir(value: str, base: Path) -> str:
    return _resolve_path(value, base) if value else str(SHIPPED_AUDIO_DIR)


def _resolve_map_paths(value: dict[str, str], base: Path) -> dict[str, str]:
    return {k: _resolve_path(v, base) for k, v in value.items()}


T = TypeVar("T")


def key(
    default: T,
    doc: str,
    parse: Callable[[object], T],
    *,
    type_name: str,
    unit: str = "",
    secret: bool = False,
    resolve: Callable[[Any, Path], Any] | None = None,
) -> T:
    """Declare one configuration key: its default, meaning, parser and how it is shown."""
    meta = {"doc": doc, "parse": parse, "type": type_name, "unit": unit, "secret": secret, "resolve": resolve}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)  # type: ignore[return-value]
    return field(default=default, metadata=meta)


def parse_flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "yes",
        "on",
        "1",
        "false",
        "no",
        "off",
        "0",
    ):
        return value.strip().lower() in ("true", "yes", "on", "1")
    raise ValueError(f"expected true or false, got {_show(value)}")


def parse_optional_hex_key(value: object) -> str | None:
    if value is None or value == "":
        return None
    text = value.strip().lower() if isinstance(value, str) else ""
    if not re.fullmatch(r"(?:[0-9a-f]{2}){16,64}", text):
        # 16 bytes at least: an HMAC-SHA256 key shorter than that is guessable (RFC 2104 §3).
        raise ValueError("expected 32 to 128 hex digits (a 16 to 64 byte key)")
    return text
