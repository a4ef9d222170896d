"""`voip-sos stb …`, `incidents …` and `serve` from the command line, against a real `serve`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Cli
from tests.sos.test_sos_serve import Serve, serving

SECRET = "5e" * 32
STB = "127.0.7.7"


def _provision(cli: Cli, *, secret: bool = True) -> None:
    args = ["directory", "add", "--uid", "u7", "--name", "Ann Lee", "--address", "7 Road", "--stb-ip", STB]
    args += ["--contact", "Son=+8613800000007"]
    if secret:
        args += ["--stb-secret", SECRET]
    assert cli(*args).returncode == 0


def _stb(cli: Cli, serve: Serve, *args: str, secret: str = SECRET) -> tuple[int, dict[str, object]]:
    proc = cli(
        "stb", *args, "--backend", f"127.0.0.1:{serve.port}", "--source-ip", STB, "--secret", secret, "--json"
    )
    return proc.returncode, json.loads(proc.stdout)


def test_stb_commands_exit_codes_and_json(cli: Cli, tmp_path: Path) -> None:
    _provision(cli)
    serve = Serve(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'directory.db'}")
    with serving(serve):
        code, out = _stb(cli, serve, "press", "--test", "--follow", "--follow-limit", "3")
        assert code == 0 and out["result"] == "receipt" and out["tries"] == 1
        incident = out["incident_id"]
        assert isinstance(incident, int) and incident > 0
        # The incident runner is calling the test number (a dead proxy here): the TV says so.
        assert out["statuses"] == [{"incident_id": incident, "status": "calling", "seq": 1, "detail": None}]
        code, out = _stb(cli, serve, "update", "--door-code", "482913", "--parking-code", "P-7")
        assert (code, out["incident_id"]) == (0, incident)
        code, out = _stb(cli, serve, "heartbeat")
        assert (code, out["incident_id"]) == (0, incident)
        code, out = _stb(cli, serve, "cancel", "--follow", "--follow-limit", "3")
        assert code == 0 and [s["status"] for s in out["statuses"]] == ["closed"]  # type: ignore[union-attr]
        code, out = _stb(cli, serve, "cancel")
        assert code == 2 and out["result"] == "reject" and out["reason"] == "no_incident"
        code, out = _stb(cli, serve, "press", "--timeout", "1", secret="aa" * 32)  # a key it cannot hold
        assert code == 3 and out["result"] == "timeout" and out["tries"] >= 3
        text = cli(
            "stb", "heartbeat", "--backend", f"127.0.0.1:{serve.port}", "--source-ip", STB, "--secret", SECRET
        )
        assert text.returncode == 0 and text.stdout.startswith("RECEIPT no open incident in ")
    listed = json.loads(cli("incidents", "list", "--json").stdout)["incidents"]
    assert [(i["id"], i["state"], i["test"], i["uid"]) for i in listed] == [
        (incident, "cancelled", True, "u7")
    ]
    shown = json.loads(cli("incidents", "show", str(incident), "--json").stdout)
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds[:2] == ["sos_received", "incident_opened"] and "incident_closed" in kinds
    lookup = shown["events"][1]["detail"]  # the directory's answer, as the incident saw it
    assert (lookup["uid"], lookup["name"], lookup["address"], lookup["contacts"]) == (
        "u7",
        "Ann Lee",
        "7 Road",
        1,
    )
    assert shown["events"][0]["detail"]["key"] == "stb"
    assert (
        next(e for e in shown["events"] if e["kind"] == "update_received")["detail"]["door_code"] == "482913"
    )
    missing = cli("incidents", "show", "999", "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout) == {"error": "no incident 999"}
    silent = json.loads(cli("stb", "silent", "--since", "10m", "--json").stdout)
    assert silent["stbs"] == []  # it sent a heartbeat a moment ago
    silent = json.loads(cli("stb", "silent", "--since", "0s", "--json").stdout)
    assert [s["ip"] for s in silent["stbs"]] == [STB] and silent["stbs"][0]["last_seen_at"]


def test_serve_refuses_trusting_carried_ips_while_stbs_share_the_operator_key(
    cli: Cli, tmp_path: Path
) -> None:
    _provision(cli, secret=False)
    serve = Serve(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'directory.db'}", sos_extra="  trust_carried_ip: true\n"
    )
    proc = cli("serve", config=serve.config, timeout=30)
    assert proc.returncode == 2
    assert "sos.trust_carried_ip: refused while STBs have no secret of their own" in proc.stderr
    assert STB in proc.stderr


def test_operator_key_from_the_configuration(cli: Cli, tmp_path: Path) -> None:
    _provision(cli, secret=False)
    op_key = "0f" * 20
    serve = Serve(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'directory.db'}", sos_extra=f"  operator_key: {op_key}\n"
    )
    with serving(serve):
        # The CLI reads the same configuration: no --secret, it signs with sos.operator_key.
        proc = cli(
            "stb",
            "press",
            "--backend",
            f"127.0.0.1:{serve.port}",
            "--source-ip",
            STB,
            "--json",
            config=serve.config,
        )
        out = json.loads(proc.stdout)
        assert proc.returncode == 0 and out["result"] == "receipt"
        # Its own secret is no use to an STB that has none provisioned: silence, then exit 3.
        code, out = _stb(cli, serve, "heartbeat", "--timeout", "1")
        assert code == 3 and out["result"] == "timeout"
    shown = json.loads(cli("incidents", "show", str(out_id(cli)), "--json").stdout)
    assert shown["events"][0]["detail"]["key"] == "operator"


def out_id(cli: Cli) -> int:
    return int(json.loads(cli("incidents", "list", "--json").stdout)["incidents"][0]["id"])
