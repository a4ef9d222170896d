"""CSV import/export through the API, on SQLite and PostgreSQL (the CLI tests cover the command)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voip_sos.directory import Directory
from voip_sos.directory.importer import CsvFormatError, decode_csv, export_csv, import_csv
from voip_sos.directory.schema import upgrade

HEADER = "uid,name,language,address,building,unit,floor,room,stb_ip,stb_secret,contacts\n"
GOOD = (
    "U1,王芳,zh,北京市海淀区花园路12号,3,2,5,502,10.0.0.1,00112233445566778899aabbccddeeff,儿子=+8613800000001\n"
    'U2,"Li, Wei",en,"7 Elm St., Springfield",,,,,10.0.0.2;10.0.0.3,,Ann=+15550100;Bob=5550101\n'
)


@pytest.fixture
async def directory(db_url: str) -> Directory:
    if db_url.startswith("postgresql"):
        await upgrade(db_url)
    d = await Directory.open(db_url)
    yield d  # type: ignore[misc]
    await d.close()


async def test_import_adds_then_is_idempotent(directory: Directory) -> None:
    data = (HEADER + GOOD).encode()
    first = await import_csv(directory, data)
    assert (first.added, first.updated, first.unchanged, first.rejected) == (2, 0, 0, 0)
    again = await import_csv(directory, data)
    assert (again.added, again.updated, again.unchanged, again.rejected) == (0, 0, 2, 0)
    m = await directory.lookup_stb("10.0.0.3")
    assert m is not None and m.subscriber.name == "Li, Wei"
    assert [c.name for c in m.subscriber.contacts] == ["Ann", "Bob"]


async def test_changed_row_updates(directory: Directory) -> None:
    await import_csv(directory, (HEADER + GOOD).encode())
    changed = GOOD.replace("Ann=+15550100", "Ann=+15550199")
    r = await import_csv(directory, (HEADER + changed).encode())
    assert (r.added, r.updated, r.unchanged) == (0, 1, 1)
    got = await directory.get("U2")
    assert got is not None and got.contacts[0].phone == "+15550199"


async def test_bad_rows_are_reported_by_line_and_column_and_good_rows_applied(directory: Directory) -> None:
    data = (
        HEADER
        + GOOD
        + "U3,Zhao,zh,Addr,,,,,10.0.0.300,,A=1\n"  # line 4
        + "U4,Qian,xx,Addr,,,,,10.0.0.4,,A=12-34\n"  # line 5: two bad columns
        + "U1,Dup,zh,Addr,,,,,10.0.0.5,,A=1\n"  # line 6: uid already on line 2
        + "U6,Sun,zh,Addr,,,,,10.0.0.2,,A=1\n"  # line 7: IP already on line 3
    ).encode()
    r = await import_csv(directory, data)
    assert (r.added, r.rejected) == (2, 4)
    assert [str(e) for e in r.errors] == [
        'line 4, column stb_ip: "10.0.0.300" is not an IP address',
        'line 5, column language: "xx" is not a supported language (en, zh)',
        'line 5, column contacts: "12-34" is not a phone number (digits with optional leading +, and * or #)',
        'line 6, column uid: "U1" is already on line 2',
        "line 7, column stb_ip: 10.0.0.2 is already on line 3 (uid U2)",
    ]
    assert r.committed
    assert await directory.count() == 2


async def test_strict_applies_nothing_when_a_row_is_bad(directory: Directory) -> None:
    data = (HEADER + GOOD + "U3,Zhao,zh,Addr,,,,,bad-ip,,A=1\n").encode()
    r = await import_csv(directory, data, strict=True)
    assert r.rejected == 1 and not r.committed
    assert await directory.count() == 0


async def test_dry_run_counts_but_writes_nothing(directory: Directory) -> None:
    r = await import_csv(directory, (HEADER + GOOD).encode(), dry_run=True)
    assert r.added == 2 and not r.committed
    assert await directory.count() == 0


async def test_ip_owned_in_database_by_another_uid_is_rejected(directory: Directory) -> None:
    await import_csv(directory, (HEADER + GOOD).encode())
    r = await import_csv(directory, (HEADER + "U9,Zhou,zh,Addr,,,,,10.0.0.1,,A=1\n").encode())
    assert [str(e) for e in r.errors] == ["line 2, column stb_ip: 10.0.0.1 already belongs to subscriber U1"]
    assert await directory.get("U9") is None


async def test_export_then_import_changes_nothing(directory: Directory, tmp_path: object) -> None:
    await import_csv(directory, (HEADER + GOOD).encode())
    out = f"{tmp_path}/export.csv"
    assert await export_csv(directory, out) == 2
    r = await import_csv(directory, Path(out).read_bytes())  # noqa: ASYNC240
    assert (r.added, r.updated, r.unchanged, r.rejected) == (0, 0, 2, 0)
    u1 = await directory.get("U1")
    assert u1 is not None and u1.stbs[0].secret == bytes.fromhex("00112233445566778899aabbccddeeff")


async def test_without_secret_column_secrets_are_kept(directory: Directory) -> None:
    await import_csv(directory, (HEADER + GOOD).encode())
    header = HEADER.replace(",stb_secret", "")
    row = "U1,王芳,zh,北京市海淀区花园路12号,3,2,5,502,10.0.0.1,儿子=+8613800000001\n"
    r = await import_csv(directory, (header + row).encode())
    assert r.unchanged == 1
    u1 = await directory.get("U1")
    assert u1 is not None and u1.stbs[0].secret is not None


HUB_HEADER = "uid,name,address,stb_ip,contacts,hub_id\n"


async def test_hub_id_column_imports_exports_and_is_unique(directory: Directory, tmp_path: object) -> None:
    data = (
        HUB_HEADER
        + "H1,Ann,1 Road,10.3.0.1,A=1,hub-0001\n"
        + "H2,Bob,2 Road,10.3.0.2,B=2,\n"  # no hub in this home
        + "H3,Cy,3 Road,10.3.0.3,C=3,hub-0001\n"  # line 4: hub already on line 2
        + "H4,Di,4 Road,10.3.0.4,D=4,Hub_1\n"  # line 5: not a hub id
    ).encode()
    r = await import_csv(directory, data)
    assert (r.added, r.rejected) == (2, 2)
    assert [str(e) for e in r.errors] == [
        "line 4, column hub_id: hub-0001 is already on line 2 (uid H1)",
        "line 5, column hub_id: \"Hub_1\" is not a hub id (a-z, 0-9, '-'; at most 63; no leading '-')",
    ]
    h1, h2 = await directory.get("H1"), await directory.get("H2")
    assert h1 is not None and h1.hub_id == "hub-0001" and h2 is not None and h2.hub_id is None
    # Another subscriber in the database owns the hub: refused, naming the owner.
    r = await import_csv(directory, (HUB_HEADER + "H2,Bob,2 Road,10.3.0.2,B=2,hub-0001\n").encode())
    assert [str(e) for e in r.errors] == ["line 2, column hub_id: hub-0001 already belongs to subscriber H1"]
    # A file without the column leaves stored hub ids alone (and counts the row unchanged).
    r = await import_csv(directory, b"uid,name,address,stb_ip,contacts\nH1,Ann,1 Road,10.3.0.1,A=1\n")
    assert r.unchanged == 1
    assert (await directory.by_hub("hub-0001")) is not None
    # Export writes the column; importing the export changes nothing; an emptied cell removes the hub.
    out = f"{tmp_path}/hubs.csv"
    await export_csv(directory, out)
    text = Path(out).read_text(encoding="utf-8")  # noqa: ASYNC240
    assert text.splitlines()[0].endswith(",hub_id") and ",hub-0001" in text
    r = await import_csv(directory, text.encode())
    assert (r.updated, r.unchanged) == (0, 2)
    r = await import_csv(directory, (HUB_HEADER + "H1,Ann,1 Road,10.3.0.1,A=1,\n").encode())
    assert r.updated == 1 and await directory.by_hub("hub-0001") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("uid,name,colour\n", "line 1: unknown column(s) colour"),
        ("uid,name,address,stb_ip\n", "line 1: missing column(s) contacts"),
        ("uid,name,address,stb_ip,contacts,uid\n", "line 1: column(s) given twice: uid"),
    ],
)
async def test_bad_header_is_refused_as_a_whole(directory: Directory, text: str, message: str) -> None:
    with pytest.raises(CsvFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await import_csv(directory, text.encode())


def test_encoding_detection() -> None:
    text = "uid,name\nU1,王芳𠀀\n"  # 𠀀 (U+20000) exists only in GB18030, not in GBK
    assert decode_csv(text.encode("utf-8")) == (text, "utf-8")
    assert decode_csv(b"\xef\xbb\xbf" + text.encode("utf-8")) == (text, "utf-8-sig")
    assert decode_csv(text.encode("gb18030")) == (text, "gb18030")
