"""The home hub's own configuration (`hub.yaml`): schema, loading, validation.

A hub never needs the backend's keys, so it has its own file, sections and environment prefix
(VOIP_HUB_<SECTION>_<KEY>, file from $VOIP_HUB_CONFIG); loading, line numbers, overrides and
messages are the backend's (voip_sos.config.load_sections), so both read and fail alike.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voip_sos.config import load_sections, markdown_table, render_effective
from voip_sos.config_values import (
    HostPort,
    _resolve_path,
    _show,
    key,
    map_of_str,
    one_of,
    parse_hostport,
    parse_optional_hostport,
    parse_optional_ip,
    parse_optional_phone,
    parse_optional_str,
    parse_positive_int,
    parse_str,
)
from voip_sos.hub.cameras import Camera, parse_cameras

__all__ = [
    "HUB_ENV_PREFIX",
    "HubConfig",
    "hub_markdown_table",
    "load_hub_config",
    "render_hub_config",
]

HUB_ENV_PREFIX = "VOIP_HUB_"
HUB_CONFIG_ENV = "VOIP_HUB_CONFIG"
DEFAULT_HUB_CONFIG_PATH = Path("hub.yaml")


def parse_hub_id(value: object) -> str:
    # The id is an MQTT topic level and the broker username: no wildcards, no slashes.
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
        raise ValueError(f"expected a hub id of a-z, 0-9 and '-' (1-63 characters), got {_show(value)}")
    return value


def parse_optional_hub_id(value: object) -> str | None:
    return None if value in (None, "") else parse_hub_id(value)


def parse_listen(value: object) -> HostPort:
    """HOST:PORT to bind; port 0 picks a free port (tests, and hubs the STB learns about otherwise)."""
    if isinstance(value, str) and value.strip().endswith(":0"):
        return HostPort(parse_hostport(value.strip()[:-2] + ":1").host, 0)
    return parse_hostport(value)


def parse_key_hex(value: object) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9a-fA-F]{2}){16,64}", value):
        raise ValueError(f"expected 32-128 hex digits (16-64 random bytes), got {_show(value)}")
    return value.lower()


def parse_slots(value: object) -> tuple[int, ...]:
    """A list of slot numbers, or ranges as text: `[20, 21]`, "20-29", "20-24,30"."""
    items: list[object]
    if isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, str):
        items = [p.strip() for p in value.strip("[]").split(",") if p.strip()]
    elif isinstance(value, list):
        items = list(value)
    else:
        raise ValueError(f"expected a list of slot numbers or ranges like 20-29, got {_show(value)}")
    out: list[int] = []
    for item in items:
        m = (
            re.fullmatch(r"(\d{1,3})(?:\s*-\s*(\d{1,3}))?", str(item).strip())
            if not isinstance(item, bool)
            else None
        )
        if m is None:
            raise ValueError(f"expected a slot number or range like 20-29, got {_show(item)}")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1 <= first <= last <= 254:
            raise ValueError(f"slots must lie in 1..254, got {_show(item)}")
        out.extend(range(first, last + 1))
    if not out:
        raise ValueError("expected at least one slot")
    if len(set(out)) != len(out):
        raise ValueError(f"slot list has duplicates: {_show(value)}")
    return tuple(out)


def parse_code_length(value: object) -> int:
    n = parse_positive_int(value)
    if not 4 <= n <= 12:
        raise ValueError(f"expected 4..12 digits, got {_show(value)}")
    return n


def parse_seconds(value: object) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"expected a positive number of seconds, got {_show(value)}")
    return float(value)


def parse_optional_url(value: object) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"expected an http:// or https:// URL, got {_show(value)}")
    return value.rstrip("/")


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError(f"expected true or false, got {_show(value)}")


def _resolve_optional_path(value: str | None, base: Path) -> str | None:
    return None if value is None else _resolve_path(value, base)


@dataclass(frozen=True, slots=True)
class HubSection:
    id: str | None = key(
        None, "This hub's id: its MQTT topic level and broker username", parse_optional_hub_id, type_name="id"
    )
    listen: HostPort = key(
        HostPort("0.0.0.0", 4760),
        "UDP address the STB's instructions arrive at",
        parse_listen,
        type_name="HOST:PORT",
    )
    stb_key: str = key(
        "",
        "Key shared with the STB (hex, 16-64 bytes) for the hub protocol's HMAC",
        parse_key_hex,
        type_name="hex",
        secret=True,
    )
    stb_ip: str | None = key(
        None,
        "The STB's address; when set, requests from elsewhere are dropped",
        parse_optional_ip,
        type_name="IP",
    )
    code_ttl_s: float = key(
        14400.0, "How long a temporary door code stays valid", parse_seconds, type_name="number", unit="s"
    )
    deadline_s: float = key(
        60.0,
        "Retry a failing lock or parking call this long, then report the failure",
        parse_seconds,
        type_name="number",
        unit="s",
    )
    state_file: str = key(
        "var/hub-state.json",
        "Where temporary codes and their expiry survive a restart",
        parse_str,
        type_name="path",
        resolve=_resolve_path,
    )


@dataclass(frozen=True, slots=True)
class LinkSection:
    broker: HostPort | None = key(
        None,
        "The operator's MQTT broker (backend link); unset = no link",
        parse_optional_hostport,
        type_name="HOST:PORT",
    )
    username: str | None = key(
        None, "Broker username (defaults to hub.id)", parse_optional_str, type_name="string"
    )
    password: str = key("", "Broker password", parse_str, type_name="string", secret=True)
    ca_file: str | None = key(
        None,
        "CA certificate for TLS to the broker; unset = plain TCP",
        parse_optional_str,
        type_name="path",
        resolve=_resolve_optional_path,
    )
    keepalive_s: int = key(30, "MQTT keepalive", parse_positive_int, type_name="int", unit="s")


@dataclass(frozen=True, slots=True)
class LockSection:
    kind: str = key(
        "none",
        "Lock adapter",
        one_of("zigbee2mqtt", "homeassistant", "none"),
        type_name="zigbee2mqtt|homeassistant|none",
    )
    slots: tuple[int, ...] = key(
        (20, 21, 22, 23, 24),
        "User slots reserved for temporary codes (never the owner's)",
        parse_slots,
        type_name="list",
    )
    code_length: int = key(6, "Digits per temporary code", parse_code_length, type_name="int")
    attempt_timeout_s: float = key(
        5.0, "Wait this long for the lock to confirm one attempt", parse_seconds, type_name="number", unit="s"
    )
    broker: HostPort = key(
        HostPort("127.0.0.1", 1883),
        "zigbee2mqtt: the home's MQTT broker",
        parse_hostport,
        type_name="HOST:PORT",
    )
    username: str | None = key(
        None, "zigbee2mqtt: home broker username", parse_optional_str, type_name="string"
    )
    password: str = key("", "zigbee2mqtt: home broker password", parse_str, type_name="string", secret=True)
    base_topic: str = key("zigbee2mqtt", "zigbee2mqtt: base topic", parse_str, type_name="string")
    device: str = key("front_door", "zigbee2mqtt: the lock's friendly name", parse_str, type_name="string")
    url: str | None = key(
        None,
        "homeassistant: base URL, e.g. http://homeassistant.local:8123",
        parse_optional_url,
        type_name="URL",
    )
    token: str = key("", "homeassistant: long-lived access token", parse_str, type_name="string", secret=True)
    entity: str = key("lock.front_door", "homeassistant: the lock entity", parse_str, type_name="entity")


_DEFAULT_REQUEST_FIELDS = {  # keep in step with parking.DEFAULT_REQUEST_FIELDS
    "uid": "uid",
    "address": "address",
    "contact_phone": "contact_phone",
    "valid_from": "valid_from",
    "valid_until": "valid_until",
    "reference": "reference",
}


@dataclass(frozen=True, slots=True)
class ParkingSection:
    url: str | None = key(
        None,
        "Endpoint the pass request is POSTed to; unset = no parking pass",
        parse_optional_url,
        type_name="URL",
    )
    token: str = key("", "Bearer token for the parking system", parse_str, type_name="string", secret=True)
    validity_s: float = key(
        14400.0, "Validity asked for the pass", parse_seconds, type_name="number", unit="s"
    )
    request_fields: dict[str, str] = key(
        dict(_DEFAULT_REQUEST_FIELDS),
        "Our fact -> their request field (dotted path for nesting); docs/parking-api.md",
        map_of_str,
        type_name="map",
    )
    code_path: str = key(
        "pass_code", "Dotted path of the pass code in the reply", parse_str, type_name="path"
    )
    valid_until_path: str = key(
        "valid_until",
        "Dotted path of the pass expiry (ISO 8601 or epoch s) in the reply",
        parse_str,
        type_name="path",
    )
    context_wait_s: float = key(
        3.0,
        "Wait this long for the backend's incident context before using `home.*`",
        parse_seconds,
        type_name="number",
        unit="s",
    )


@dataclass(frozen=True, slots=True)
class HomeSection:
    uid: str | None = key(
        None, "Subscriber id, if the backend cannot be reached", parse_optional_str, type_name="string"
    )
    address: str | None = key(None, "Home address, same fallback", parse_optional_str, type_name="string")
    contact_phone: str | None = key(
        None, "Contact phone for the parking pass, same fallback", parse_optional_phone, type_name="phone"
    )


def parse_fraction_seconds(value: object) -> float:
    seconds = parse_seconds(value)
    if seconds < 1.0:
        raise ValueError(f"expected at least 1 second, got {_show(value)}")
    return seconds


@dataclass(frozen=True, slots=True)
class ClipSection:
    cameras: tuple[Camera, ...] = key(
        (),
        "Cameras: name, url (rtsp://), username, password, mode (auto, copy, transcode); docs/clip.md",
        parse_cameras,
        type_name="list",
    )
    clip_s: float = key(
        300.0,
        "Length of the whole clip uploaded on SOS",
        parse_fraction_seconds,
        type_name="number",
        unit="s",
    )
    first_s: float = key(
        30.0,
        "Length of the short clip cut and uploaded first",
        parse_fraction_seconds,
        type_name="number",
        unit="s",
    )
    margin_s: float = key(
        60.0,
        "Buffer kept beyond clip_s (a press while uploading)",
        parse_seconds,
        type_name="number",
        unit="s",
    )
    segment_s: float = key(
        2.0,
        "Buffer segment length (a segment starts at the first keyframe after it)",
        parse_fraction_seconds,
        type_name="number",
        unit="s",
    )
    buffer_dir: str = key(
        "var/clip-buffer",
        "Where the rolling buffer and the clips waiting for upload live",
        parse_str,
        type_name="path",
        resolve=_resolve_path,
    )
    max_mb: int = key(
        200,
        "Disk cap per camera buffer (oldest segments go first)",
        parse_positive_int,
        type_name="int",
        unit="MB",
    )
    transcode_height: int = key(
        360,
        "Height of the H.264 a transcoded camera is buffered at",
        parse_positive_int,
        type_name="int",
        unit="px",
    )
    upload_deadline_s: float = key(
        3600.0,
        "Keep retrying a clip upload this long after the press",
        parse_seconds,
        type_name="number",
        unit="s",
    )
    source: str = key(
        "buffer",
        "Where clips come from: our own buffer, or Frigate",
        one_of("buffer", "frigate"),
        type_name="buffer|frigate",
    )
    frigate_url: str | None = key(
        None, "Frigate's base URL, e.g. http://frigate.local:5000", parse_optional_url, type_name="URL"
    )
    frigate_token: str = key(
        "", "Bearer token for Frigate's authenticated port (8971)", parse_str, type_name="string", secret=True
    )
    frigate_wait_s: float = key(
        30.0,
        "Wait this long for Frigate to have recorded up to the press",
        parse_seconds,
        type_name="number",
        unit="s",
    )


@dataclass(frozen=True, slots=True)
class HubLogSection:
    level: str = key(
        "info", "Lowest level logged", one_of("debug", "info", "warning", "error"), type_name="level"
    )
    format: str = key("text", "`json` or `text`", one_of("json", "text"), type_name="json|text")


@dataclass(frozen=True, slots=True)
class HubConfig:
    """The whole validated hub configuration; `path` is the file it came from, if any."""

    hub: HubSection = field(default_factory=HubSection)
    link: LinkSection = field(default_factory=LinkSection)
    lock: LockSection = field(default_factory=LockSection)
    parking: ParkingSection = field(default_factory=ParkingSection)
    home: HomeSection = field(default_factory=HomeSection)
    clip: ClipSection = field(default_factory=ClipSection)
    log: HubLogSection = field(default_factory=HubLogSection)
    path: Path | None = None


HUB_SECTION_TYPES: dict[str, type[Any]] = {
    "hub": HubSection,
    "link": LinkSection,
    "lock": LockSection,
    "parking": ParkingSection,
    "home": HomeSection,
    "clip": ClipSection,
    "log": HubLogSection,
}


def _cross_checks(cfg: HubConfig) -> list[str]:
    problems: list[str] = []
    if cfg.hub.id is None:
        problems.append("config error: hub.id: required (the hub's MQTT topic level and broker user)")
    if not cfg.hub.stb_key:
        problems.append(
            "config error: hub.stb_key: required (shared with the STB to authenticate instructions)"
        )
    if cfg.lock.kind == "homeassistant" and (cfg.lock.url is None or not cfg.lock.token):
        problems.append("config error: lock.url: lock.kind homeassistant needs lock.url and lock.token")
    clip = cfg.clip
    if clip.first_s > clip.clip_s:
        problems.append("config error: clip.first_s: longer than clip.clip_s")
    for cam in clip.cameras:
        if clip.source == "buffer" and cam.url is None:
            problems.append(f"config error: clip.cameras: camera {cam.name} needs a url (clip.source buffer)")
    if clip.source == "frigate" and clip.frigate_url is None:
        problems.append("config error: clip.frigate_url: required with clip.source frigate")
    for ours in cfg.parking.request_fields:
        if ours not in _DEFAULT_REQUEST_FIELDS:
            known = ", ".join(_DEFAULT_REQUEST_FIELDS)
            problems.append(f"config error: parking.request_fields.{ours}: unknown fact (known: {known})")
    return problems


def load_hub_config(path: str | Path | None = None, environ: Any = None) -> HubConfig:
    """Load `hub.yaml`, apply VOIP_HUB_* overrides, validate. Raises ConfigError listing every problem."""
    from voip_sos.errors import ConfigError

    sections, found = load_sections(
        path,
        environ,
        section_types=HUB_SECTION_TYPES,
        env_prefix=HUB_ENV_PREFIX,
        config_env=HUB_CONFIG_ENV,
        default_path=DEFAULT_HUB_CONFIG_PATH,
    )
    cfg = HubConfig(**sections, path=found)
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def render_hub_config(cfg: HubConfig) -> str:
    """The effective hub configuration as YAML, secrets masked."""
    return render_effective(cfg, HUB_SECTION_TYPES)


def hub_markdown_table() -> str:
    """The hub's keys as a README table."""
    return markdown_table(HUB_SECTION_TYPES)
