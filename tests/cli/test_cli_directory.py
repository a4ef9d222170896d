"""The installed `voip-sos` command, run as an operator would, in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Cli

ADD = [
    "directory", "add", "--uid", "U1001", "--name", "王芳", "--stb-ip", "10.1.0.1",
    "--address", "北京市海淀区花园路12号", "--building", "3", "--unit", "2", "--floor", "5", "--room", "502",
    "--language", "zh", "--contact", "儿子=+8613800000001", "--contact", "女儿=13900000002",
    "--stb-secret", "00112233445566778899aabbccddeeff",
]  # fmt: skip


def test_add_show_lookup_update_remove(cli: Cli) -> None:
    r = cli(*ADD)
    assert r.returncode == 0, r.stderr
    assert "added U1001" in r.stdout and "00112233" not in r.stdout and "secret set" in r.stdout

    r = cli("directory", "show", "--uid", "U1001", "--json")
    obj = json.loads(r.stdout)
    assert obj["name"] == "王芳" and obj["address"]["room"] == "502"
    assert obj["contacts"] == [
        {"name": "儿子", "phone": "+8613800000001"},
        {"name": "女儿", "phone": "13900000002"},
    ]
    assert obj["stbs"] == [{"ip": "10.1.0.1", "secret": "set", "last_seen_at": None}]

    r = cli("directory", "lookup", "10.1.0.1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["subscriber"]["uid"] == "U1001"

    r = cli("directory", "update", "--uid", "U1001", "--name", "Wang Fang", "--contact", "Son=+8613800000009")
    assert r.returncode == 0, r.stderr
    obj = json.loads(cli("directory", "show", "--uid", "U1001", "--json").stdout)
    assert obj["name"] == "Wang Fang" and obj["address"]["building"] == "3"
    assert obj["contacts"] == [{"name": "Son", "phone": "+8613800000009"}]
    assert obj["stbs"][0]["secret"] == "set"  # kept: --stb-secret was not given

    r = cli("directory", "list")
    assert r.returncode == 0 and "U1001" in r.stdout and "(1 of 1 subscribers)" in r.stdout

    r = cli("directory", "remove", "--uid", "U1001")
    assert r.returncode == 0
    r = cli("directory", "lookup", "10.1.0.1")
    assert r.returncode == 1 and "no subscriber for STB 10.1.0.1" in r.stderr


def test_lookup_unknown_ip_exits_1_with_message(cli: Cli) -> None:
    r = cli("directory", "lookup", "10.1.2.3")
    assert r.returncode == 1
    assert r.stderr.strip() == "error: no subscriber for STB 10.1.2.3"


def test_duplicate_ip_names_the_owner_and_changes_nothing(cli: Cli) -> None:
    assert cli(*ADD).returncode == 0
    r = cli("directory", "add", "--uid", "U2", "--name", "X", "--stb-ip", "10.1.0.1", "--address", "A",
            "--contact", "A=1")  # fmt: skip
    assert r.returncode == 1
    assert "STB 10.1.0.1 already belongs to subscriber U1001" in r.stderr
    assert cli("directory", "show", "--uid", "U2").returncode == 1


def test_bad_phone_and_bad_ip_are_named(cli: Cli) -> None:
    r = cli("directory", "add", "--uid", "U2", "--name", "X", "--stb-ip", "10.1.0.2", "--address", "A",
            "--contact", "Son=138-0000")  # fmt: skip
    assert r.returncode == 2
    assert '--contacts: "138-0000" is not a phone number' in r.stderr
    r = cli("directory", "add", "--uid", "U2", "--name", "X", "--stb-ip", "10.0.0.300", "--address", "A",
            "--contact", "Son=1")  # fmt: skip
    assert r.returncode == 2
    assert '--stb-ip: "10.0.0.300" is not an IP address' in r.stderr
    assert cli("directory", "list", "--json").stdout.count('"uid"') == 0


CSV_ROWS = [
    "uid,name,language,address,building,unit,floor,room,stb_ip,contacts",
    "C1,张伟,zh,上海市浦东新区世纪大道100号,5,1,12,1201,10.5.0.1,儿子=+8613800000001;老伴=13900000002",
    "C2,𠀀李,zh,广州市天河区体育西路1号,,,,,10.5.0.2,女儿=+8613700000003",
    'C3,"O\'Brien, Mary",en,"12 Elm St., Apt. 4",,,,,10.5.0.3,Son=+15550100',
]


def _write(path: Path, rows: list[str], encoding: str) -> Path:
    path.write_bytes("\r\n".join(rows).encode(encoding) + b"\r\n")
    return path


def test_csv_in_utf8_bom_and_gb18030(cli: Cli, tmp_path: Path) -> None:
    for encoding in ("utf-8", "utf-8-sig", "gb18030"):
        path = _write(tmp_path / f"crm-{encoding}.csv", CSV_ROWS, encoding)
        r = cli("directory", "import", str(path), "--json")
        assert r.returncode == 0, r.stderr
        obj = json.loads(r.stdout)
        assert obj["encoding"] == encoding
        assert obj["rejected"] == 0
    r = cli("directory", "lookup", "10.5.0.2", "--json")
    assert json.loads(r.stdout)["subscriber"]["name"] == "𠀀李"
    r = cli("directory", "lookup", "10.5.0.1", "--json")
    sub = json.loads(r.stdout)["subscriber"]
    assert sub["address"]["line"] == "上海市浦东新区世纪大道100号"
    assert [c["name"] for c in sub["contacts"]] == ["儿子", "老伴"]


def test_bad_rows_reported_with_line_numbers(cli: Cli, tmp_path: Path) -> None:
    rows = [
        *CSV_ROWS,
        "C4,Bad Ip,en,Somewhere,,,,,10.0.0.300,A=1",  # line 5
        "C5,Too,few,fields",  # line 6
        "C6,Bad Phone,en,Somewhere,,,,,10.5.0.6,A=call-me",  # line 7
    ]
    path = _write(tmp_path / "bad.csv", rows, "utf-8")
    r = cli("directory", "import", str(path))
    assert r.returncode == 1
    assert f'{path}: line 5, column stb_ip: "10.0.0.300" is not an IP address' in r.stderr
    assert f"{path}: line 6, column *: 4 fields, the header has 10" in r.stderr
    assert f'{path}: line 7, column contacts: "call-me" is not a phone number' in r.stderr
    assert "3 added, 0 updated, 0 unchanged, 3 rejected" in r.stdout
    assert cli("directory", "lookup", "10.5.0.3").returncode == 0


def test_strict_and_dry_run(cli: Cli, tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.csv", [*CSV_ROWS, "C4,Bad,en,Addr,,,,,nope,A=1"], "utf-8")
    r = cli("directory", "import", str(bad), "--strict")
    assert r.returncode == 1 and "nothing written" in r.stdout
    assert cli("directory", "lookup", "10.5.0.1").returncode == 1
    good = _write(tmp_path / "good.csv", CSV_ROWS, "utf-8")
    r = cli("directory", "import", str(good), "--dry-run")
    assert r.returncode == 0 and "3 added" in r.stdout and "dry run" in r.stdout
    assert cli("directory", "lookup", "10.5.0.1").returncode == 1
    assert cli("directory", "import", str(good), "--strict").returncode == 0
    assert cli("directory", "lookup", "10.5.0.1").returncode == 0


def test_export_import_round_trip_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    assert cli(*ADD).returncode == 0
    cli("directory", "import", str(_write(tmp_path / "in.csv", CSV_ROWS, "gb18030")))
    before = json.loads(cli("directory", "list", "--json").stdout)
    out = tmp_path / "export.csv"
    r = cli("directory", "export", str(out))
    assert r.returncode == 0 and "exported 4 subscribers" in r.stdout
    assert out.stat().st_mode & 0o077 == 0  # secrets inside: owner only
    r = cli("directory", "import", str(out), "--json")
    assert json.loads(r.stdout)["unchanged"] == 4 and json.loads(r.stdout)["added"] == 0
    after = json.loads(cli("directory", "list", "--json").stdout)
    assert after == before


def test_missing_file_and_bad_header(cli: Cli, tmp_path: Path) -> None:
    r = cli("directory", "import", str(tmp_path / "nope.csv"))
    assert r.returncode == 1 and "cannot read" in r.stderr
    bad = tmp_path / "h.csv"
    bad.write_text("uid,name,phone\n", encoding="utf-8")
    r = cli("directory", "import", str(bad))
    assert r.returncode == 1 and "unknown column(s) phone" in r.stderr


async def test_running_backend_sees_cli_changes_without_restart(cli: Cli) -> None:
    """The backend's lookup path sees a record added, changed and removed by another process."""
    from voip_sos.directory import Directory

    assert cli("directory", "list").returncode == 0  # creates and migrates the file
    backend = await Directory.open(f"sqlite+aiosqlite:///{cli.workdir / 'directory.db'}")
    try:
        assert await backend.lookup_stb("10.1.0.1") is None
        assert cli(*ADD).returncode == 0
        match = await backend.lookup_stb("10.1.0.1")
        assert match is not None and match.subscriber.name == "王芳"
        assert cli("directory", "update", "--uid", "U1001", "--room", "503").returncode == 0
        match = await backend.lookup_stb("10.1.0.1")
        assert match is not None and match.subscriber.address.room == "503"
        assert cli("directory", "remove", "--uid", "U1001").returncode == 0
        assert await backend.lookup_stb("10.1.0.1") is None
    finally:
        await backend.close()


def test_hub_id_set_shown_refused_and_removed(cli: Cli) -> None:
    assert cli(*ADD, "--hub-id", "hub-0042").returncode == 0
    obj = json.loads(cli("directory", "show", "--uid", "U1001", "--json").stdout)
    assert obj["hub_id"] == "hub-0042"
    assert "\nhub         hub-0042\n" in cli("directory", "show", "--uid", "U1001").stdout
    r = cli("directory", "add", "--uid", "U2", "--name", "X", "--stb-ip", "10.1.0.2", "--address", "A",
            "--contact", "A=1", "--hub-id", "hub-0042", "--json")  # fmt: skip
    assert r.returncode == 1
    assert json.loads(r.stdout) == {
        "error": "hub hub-0042 already belongs to subscriber U1001; nothing was changed"
    }
    r = cli("directory", "update", "--uid", "U1001", "--hub-id", "HUB 42")
    assert r.returncode == 2 and r.stderr.startswith('error: --hub-id: "HUB 42" is not a hub id'), r.stderr
    assert cli("directory", "update", "--uid", "U1001", "--floor", "6").returncode == 0
    assert json.loads(cli("directory", "show", "--uid", "U1001", "--json").stdout)["hub_id"] == "hub-0042"
    assert cli("directory", "update", "--uid", "U1001", "--hub-id", "").returncode == 0
    assert json.loads(cli("directory", "show", "--uid", "U1001", "--json").stdout)["hub_id"] is None
