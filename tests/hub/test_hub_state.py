"""Slot table, state file, parking mapping and hub.yaml validation (pure parts, real files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from voip_sos.errors import ConfigError, LocalProtocolError
from voip_sos.hub.config import HubConfig, hub_markdown_table, load_hub_config
from voip_sos.hub.parking import DEFAULT_REQUEST_FIELDS, ParkingError, PassRequest, build_body, read_reply
from voip_sos.hub.slots import CodeState, SlotTable, new_code
from voip_sos.hub.store import load_state, save_state

ROOT = Path(__file__).resolve().parents[2]


def test_codes_are_random_digits_of_the_length_asked() -> None:
    codes = {new_code(6) for _ in range(2000)}
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(codes) > 1990  # 2000 draws from 10^6: collisions are rare
    assert {c[0] for c in codes} == set("0123456789")  # leading zeros happen and are kept
    with pytest.raises(LocalProtocolError):
        new_code(3)


def test_first_free_reserved_slot_reuse_and_exhaustion() -> None:
    table = SlotTable((20, 21), code_length=8)
    a = table.allocate(1000.0, 100.0, "r1")
    assert a is not None and a.slot == 20 and len(a.code) == 8 and a.state is CodeState.SETTING
    assert table.current(1000.0, 50.0) is None  # not confirmed yet: never handed out
    table.mark(20, CodeState.ACTIVE)
    assert table.current(1040.0, 50.0) == table.get(20)
    assert table.current(1060.0, 50.0) is None  # less than half its validity left
    b = table.allocate(1060.0, 100.0)
    assert b is not None and b.slot == 21
    assert table.allocate(1060.0, 100.0) is None
    table.remove(20)
    c = table.allocate(1070.0, 100.0)
    assert c is not None and c.slot == 20
    assert [x.slot for x in table.due(1160.0)] == [21]
    assert table.next_due() == 1160.0


def test_state_survives_a_restart_and_orphans_are_returned(tmp_path: Path) -> None:
    path = tmp_path / "var" / "state.json"
    table = SlotTable((20, 21, 22))
    code = table.allocate(500.0, 60.0, "abc")
    assert code is not None
    table.mark(code.slot, CodeState.ACTIVE)
    save_state(path, table.to_json())
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary file left behind
    again = SlotTable((20, 21, 22))
    assert again.load_json(load_state(path)) == []
    assert again.codes() == table.codes()
    narrowed = SlotTable((21, 22))  # slot 20 is no longer reserved: handed back to be cleared
    assert [o.slot for o in narrowed.load_json(load_state(path))] == [20]


def test_corrupt_state_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert load_state(path) == {}
    assert (tmp_path / "state.json.corrupt").exists() and not path.exists()
    assert load_state(tmp_path / "missing.json") == {}


def test_save_is_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, {"codes": []})
    inode = os.stat(path).st_ino
    save_state(path, {"codes": [1]})
    assert os.stat(path).st_ino != inode and json.loads(path.read_text())["codes"] == [1]


def test_parking_request_mapping_and_reply_paths() -> None:
    req = PassRequest("U1", "1 Road", "+861", 1_764_000_000.0, 1_764_014_400.0, "ref")
    assert build_body(req, DEFAULT_REQUEST_FIELDS) == {
        "uid": "U1",
        "address": "1 Road",
        "contact_phone": "+861",
        "valid_from": "2025-11-24T16:00:00Z",
        "valid_until": "2025-11-24T20:00:00Z",
        "reference": "ref",
    }
    body = build_body(req, {"uid": "resident.id", "contact_phone": "resident.phones.0", "reference": ""})
    assert body["resident"] == {"id": "U1", "phones": {"0": "+861"}} and "reference" not in body
    reply = {"data": {"passes": [{"code": 12345, "expires": "2025-11-24T21:00:00+00:00"}]}}
    granted = read_reply(reply, "data.passes.0.code", "data.passes.0.expires", 0.0)
    assert granted.code == "12345" and granted.valid_until == 1_764_018_000.0
    assert read_reply({"c": "X"}, "c", "missing", 42.0).valid_until == 42.0
    assert read_reply({"c": "X", "u": 1_764_018_000}, "c", "u", 0.0).valid_until == 1_764_018_000.0
    with pytest.raises(ParkingError, match=r"reply has no 'pass\.code'"):
        read_reply({"pass": {}}, "pass.code", "x", 0.0)
    with pytest.raises(ParkingError, match="not a time"):
        read_reply({"c": "X", "u": "soon"}, "c", "u", 0.0)


def test_example_hub_yaml_is_valid_and_documented() -> None:
    cfg = load_hub_config(ROOT / "hub.yaml", environ={})
    assert cfg.hub.id == "hub-0042" and cfg.lock.slots == (20, 21, 22, 23, 24)
    assert cfg.parking.request_fields["uid"] == "resident.id"
    table = hub_markdown_table()
    for section in ("hub", "link", "lock", "parking", "home", "log"):
        assert f"| `{section}." in table
    notes = (ROOT / "docs" / "hub.md").read_text(encoding="utf-8")
    assert table in notes, "docs/hub.md must carry the current `voip-sos hub table`"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = "hub:\n  id: hub-1\n  stb_key: " + "ab" * 16 + "\n"


def test_errors_name_key_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD
        + "lock:\n  kind: zwave\n  slots: 0-3\n  code_length: 3\nparking:\n  url: ftp://x\n  colour: red\nextra: {}\n",
    )
    with pytest.raises(ConfigError) as exc:
        load_hub_config(path, environ={})
    assert exc.value.problems == [
        'config error: lock.kind: expected one of zigbee2mqtt, homeassistant, none, got "zwave" (hub.yaml line 5)',
        'config error: lock.slots: slots must lie in 1..254, got "0-3" (hub.yaml line 6)',
        "config error: lock.code_length: expected 4..12 digits, got 3 (hub.yaml line 7)",
        "config error: parking.colour: unknown key (hub.yaml line 10)",
        'config error: parking.url: expected an http:// or https:// URL, got "ftp://x" (hub.yaml line 9)',
        "config error: extra: unknown section (hub.yaml line 11)",
    ]


def test_required_keys_and_cross_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_hub_config(write(tmp_path, "lock:\n  kind: homeassistant\n"), environ={})
    assert exc.value.problems == [
        "config error: hub.id: required (the hub's MQTT topic level and broker user)",
        "config error: hub.stb_key: required (shared with the STB to authenticate instructions)",
        "config error: lock.url: lock.kind homeassistant needs lock.url and lock.token",
    ]


def test_env_overrides_with_the_hub_prefix(tmp_path: Path) -> None:
    env = {
        "VOIP_HUB_LOCK_TOKEN": "secret-token",
        "VOIP_HUB_LOCK_SLOTS": "30-31,40",
        "VOIP_HUB_PARKING_REQUEST_FIELDS__UID": "member.uid",
        "VOIP_HUB_HUB_CODE_TTL_S": "90",
        "VOIP_SOS_SIP_PASSWORD": "the backend's, ignored here",
    }
    cfg = load_hub_config(write(tmp_path, GOOD), environ=env)
    assert isinstance(cfg, HubConfig)
    assert cfg.lock.token == "secret-token" and cfg.lock.slots == (30, 31, 40)
    assert cfg.parking.request_fields == {"uid": "member.uid"} and cfg.hub.code_ttl_s == 90.0
    with pytest.raises(ConfigError) as exc:
        load_hub_config(
            write(tmp_path, GOOD), environ={"VOIP_HUB_LOCK_KIND": "zwave", "VOIP_HUB_NOPE_X": "1"}
        )
    assert exc.value.problems == [
        "config error: VOIP_HUB_NOPE_X: no configuration section matches (environment)",
        'config error: lock.kind: expected one of zigbee2mqtt, homeassistant, none, got "zwave" (environment VOIP_HUB_LOCK_KIND)',
    ]
