"""Configuration: validation messages name the key and line; env overrides; masking; README table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli
from voip_sos.config import HostPort, PortRange, load_config, markdown_table
from voip_sos.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def problems(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    return info.value.problems


def test_example_config_is_valid_and_complete() -> None:
    cfg = load_config(ROOT / "config.yaml", {})
    assert cfg.sip.registrar == HostPort("127.0.0.1", 5062)
    assert cfg.rtp.ports == PortRange(20000, 20999)
    assert cfg.rtp.codecs == ("PCMA", "PCMU")
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    for row in markdown_table().splitlines()[2:]:
        dotted = row.split("`")[1]
        section, key = dotted.split(".")
        assert (
            f"\n  {key}:" in text.split(f"\n{section}:", 1)[1].split("\n\n", 1)[0] or f"#  {key}" in text
        ), dotted


def test_readme_table_matches_schema() -> None:
    assert markdown_table() in (ROOT / "README.md").read_text(encoding="utf-8")


def test_bad_values_name_key_and_line(tmp_path: Path) -> None:
    got = problems(
        "sip:\n  transport: udp\n  registrar: pbx:abc\nrtp:\n  ports: 21000-20000\n  codecs: [PCMA, G729]\n"
        "emergency:\n  center: 12-0\n",
        tmp_path,
    )
    assert got == [
        'config error: sip.registrar: expected HOST:PORT, got "pbx:abc" (config.yaml line 3)',
        'config error: rtp.ports: expected 1024 <= FIRST <= LAST <= 65535, got "21000-20000" (config.yaml line 5)',
        'config error: rtp.codecs: expected one of PCMA, PCMU, got "G729" (config.yaml line 6)',
        "config error: emergency.center: expected a phone number (digits, optional leading +, * and #), "
        'got "12-0" (config.yaml line 8)',
    ]


def test_unknown_keys_and_sections(tmp_path: Path) -> None:
    got = problems("sip:\n  pasword: x\nfoo:\n  bar: 1\n", tmp_path)
    assert got == [
        "config error: sip.pasword: unknown key (config.yaml line 2)",
        "config error: foo: unknown section (config.yaml line 3)",
    ]


def test_wrong_types(tmp_path: Path) -> None:
    got = problems("sip:\n  expires_s: -5\n  transport: [udp]\nlog: verbose\n", tmp_path)
    assert got == [
        "config error: sip.transport: expected one of udp, tcp, got ['udp'] (config.yaml line 3)",
        "config error: sip.expires_s: expected a positive whole number, got -5 (config.yaml line 2)",
        "config error: log: expected a mapping of keys (config.yaml line 4)",
    ]


def test_env_overrides_and_nested_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("sip:\n  password: from-file\nvoice:\n  models:\n    en: en.onnx\n", encoding="utf-8")
    cfg = load_config(
        path,
        {
            "VOIP_SOS_SIP_PASSWORD": "0123",
            "VOIP_SOS_HTTP_PUBLIC_URL": "https://sos.example.net/",
            "VOIP_SOS_VOICE_MODELS__ZH": "voices/zh.onnx",
            "VOIP_SOS_RTP_CODECS": '["PCMU"]',
            "VOIP_SOS_SIP_EXPIRES_S": "300",
        },
    )
    assert cfg.sip.password == "0123"  # a string stays a string, leading zero and all
    assert cfg.http.public_url == "https://sos.example.net"
    assert cfg.voice.models == {"en": str(tmp_path / "en.onnx"), "zh": str(tmp_path / "voices/zh.onnx")}
    assert cfg.rtp.codecs == ("PCMU",)
    assert cfg.sip.expires_s == 300


def test_bad_env_values_name_the_variable(tmp_path: Path) -> None:
    got = problems(
        "", tmp_path, {"VOIP_SOS_SIP_REGISTRAR": "nope", "VOIP_SOS_SIP_PASWORD": "x", "VOIP_SOS_X_Y": "1"}
    )
    assert got == [
        "config error: sip.pasword: unknown key (environment VOIP_SOS_SIP_PASWORD)",
        "config error: VOIP_SOS_X_Y: no configuration section matches (environment)",
        'config error: sip.registrar: expected HOST:PORT, got "nope" (environment VOIP_SOS_SIP_REGISTRAR)',
    ]


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    (sub / "config.yaml").write_text(
        "directory:\n  url: sqlite+aiosqlite:///data/sos.db\nvoice:\n  cache_dir: cache\n", encoding="utf-8"
    )
    cfg = load_config(sub / "config.yaml", {})
    assert cfg.directory.url == f"sqlite+aiosqlite:///{sub}/data/sos.db"
    assert cfg.voice.cache_dir == str(sub / "cache")


def test_ipv6_hostport(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("sip:\n  listen: '[::1]:5070'\n", encoding="utf-8")
    assert load_config(path, {}).sip.listen == HostPort("::1", 5070)


def test_config_check_masks_secrets_and_exits_2_on_errors(cli: Cli) -> None:
    cli.config.write_text("sip:\n  password: hunter2\n  registrar: 127.0.0.1:5060\n", encoding="utf-8")
    r = cli("config", "check")
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout and "password: '********'" in r.stdout and "config ok" in r.stdout
    r = cli("config", "check", env={"VOIP_SOS_SIP_REGISTRAR": "pbx:abc"})
    assert r.returncode == 2
    assert 'sip.registrar: expected HOST:PORT, got "pbx:abc" (environment VOIP_SOS_SIP_REGISTRAR)' in r.stderr
    cli.config.write_text("sip:\n  registrar: pbx:abc\n", encoding="utf-8")
    r = cli("directory", "list")
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == 'config error: sip.registrar: expected HOST:PORT, got "pbx:abc" (config.yaml line 2)'
    )


def test_missing_explicit_config_file(cli: Cli, tmp_path: Path) -> None:
    r = cli("config", "check", config=tmp_path / "nope.yaml")
    assert r.returncode == 2 and "cannot read" in r.stderr and "nope.yaml" in r.stderr


def test_config_check_refuses_trusting_carried_ip_while_stbs_lack_secrets(cli: Cli) -> None:
    assert cli("directory", "add", "--uid", "U1", "--name", "A", "--stb-ip", "10.1.0.1", "--address", "X",
               "--contact", "S=1").returncode == 0  # fmt: skip
    r = cli("config", "check", env={"VOIP_SOS_SOS_TRUST_CARRIED_IP": "true"})
    assert r.returncode == 2
    assert (
        "sos.trust_carried_ip: refused while STBs have no secret of their own" in r.stderr
        and "10.1.0.1" in r.stderr
    )
    assert cli("directory", "update", "--uid", "U1", "--stb-secret", "00" * 16).returncode == 0
    r = cli("config", "check", env={"VOIP_SOS_SOS_TRUST_CARRIED_IP": "true"})
    assert r.returncode == 0, r.stderr


def test_config_check_reports_a_missing_voice_model(cli: Cli) -> None:
    r = cli("config", "check", env={"VOIP_SOS_VOICE_MODELS__ZH": "voices/none.onnx"})
    assert r.returncode == 2 and "voice.models.zh" in r.stderr


def test_hub_link_keys_env_overrides_masking_and_errors(cli: Cli, tmp_path: Path) -> None:
    cli.config.write_text("hub_link:\n  broker: 127.0.0.1:1883\n  ca_file: certs/ca.pem\n", encoding="utf-8")
    cfg = load_config(
        cli.config, {"VOIP_SOS_HUB_LINK_PASSWORD": "s3cret", "VOIP_SOS_HUB_LINK_CLIENT_ID": "b1"}
    )
    link = cfg.hub_link
    assert link.broker == HostPort("127.0.0.1", 1883) and link.username == "voip-sos-backend"
    assert (link.password, link.client_id) == ("s3cret", "b1")
    assert link.ca_file == str(cli.workdir / "certs" / "ca.pem")  # relative to the config file
    r = cli("config", "check", env={"VOIP_SOS_HUB_LINK_PASSWORD": "s3cret"})
    assert r.returncode == 0, r.stderr
    assert "s3cret" not in r.stdout and "password: '********'" in r.stdout.split("hub_link:")[1]
    assert problems(
        "hub_link:\n  broker: mqtt\n  revoke_timeout_s: 0\nemergency:\n  codes_settle_s: -1\n", tmp_path
    ) == [
        "config error: emergency.codes_settle_s: expected a number >= 0, got -1 (config.yaml line 5)",
        'config error: hub_link.broker: expected HOST:PORT, got "mqtt" (config.yaml line 2)',
        "config error: hub_link.revoke_timeout_s: expected a positive number, got 0 (config.yaml line 3)",
    ]
