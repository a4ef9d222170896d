"""Bulk provisioning from the operator's CRM: CSV import (validated upsert by uid) and export.

The format is specified in docs/directory-csv.md. An import is one database transaction: without
--strict the good rows are committed and each bad row reported; with --strict nothing is committed
if any row is bad; --dry-run never commits. Rows are processed in chunks with set-based queries so a
million rows import in well under a minute.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from tqdm import tqdm

from voip_sos.directory.models import stbs, subscribers
from voip_sos.directory.records import ADDRESS_PARTS, Address, Contact, Stb, Subscriber
from voip_sos.directory.repository import Directory, load_subscribers, subscriber_row, utcnow, write_children
from voip_sos.directory.validate import (
    MAX_NOTES_CHARS,
    MAX_TEXT_CHARS,
    FieldError,
    parse_contacts,
    parse_hub_id,
    parse_ips,
    parse_language,
    parse_secret,
    parse_text,
    parse_uid,
)

__all__ = ["CSV_COLUMNS", "ImportResult", "RowError", "decode_csv", "export_csv", "import_csv"]

CSV_COLUMNS = (
    "uid", "name", "language", "address", *ADDRESS_PARTS, "notes", "stb_ip", "stb_secret", "contacts",
    "hub_id",
)  # fmt: skip
REQUIRED_COLUMNS = ("uid", "name", "address", "stb_ip", "contacts")
LIST_SEPARATOR = ";"
CHUNK_ROWS = 2000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RowError:
    """One refused value: where it is and what is wrong with it."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


@dataclass(slots=True)
class ImportResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    encoding: str = ""
    committed: bool = False

    def summary(self) -> str:
        counts = (self.added, self.updated, self.unchanged, self.rejected)
        return "{} added, {} updated, {} unchanged, {} rejected".format(*counts)


class CsvFormatError(ValueError):
    """The file as a whole cannot be imported (header, encoding)."""


def decode_csv(data: bytes) -> tuple[str, str]:
    """Bytes -> text and the encoding found: UTF-8 (with or without BOM), else GB18030.

    GB18030 is tried last because it accepts almost any byte sequence; it is a superset of GBK and
    GB2312, and has the rare characters found in older people's names.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"not UTF-8 and not GB18030 (byte {exc.start})") from None


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(LIST_SEPARATOR)] if value.strip() else []


def parse_row(
    line: int, row: dict[str, str], default_language: str
) -> tuple[Subscriber | None, list[RowError]]:
    """One CSV row -> a Subscriber, or the errors of every bad column.

    Straight-line on purpose: this runs a million times in a large import.
    """
    errors: list[RowError] = []
    get = row.get

    def text_of(column: str, *, required: bool = False, limit: int = MAX_TEXT_CHARS) -> str:
        try:
            return parse_text(column, get(column) or "", required=required, limit=limit)
        except FieldError as exc:
            errors.append(RowError(line, exc.column, str(exc)))
            return ""

    uid = name = language = ""
    hub_id: str | None = None
    ips: tuple[str, ...] = ()
    contact_list: tuple[Contact, ...] = ()
    try:
        uid = parse_uid(get("uid") or "")
    except FieldError as exc:
        errors.append(RowError(line, exc.column, str(exc)))
    name = text_of("name", required=True)
    try:
        language = parse_language(get("language") or "", default_language)
    except FieldError as exc:
        errors.append(RowError(line, exc.column, str(exc)))
    line_text = text_of("address", required=True)
    parts = [text_of(p) if get(p) else "" for p in ADDRESS_PARTS]
    notes = text_of("notes", limit=MAX_NOTES_CHARS)
    try:
        ips = parse_ips(_split(get("stb_ip") or ""))
    except FieldError as exc:
        errors.append(RowError(line, exc.column, str(exc)))
    secret_texts = _split(get("stb_secret") or "")
    secrets: list[bytes | None] = []
    for item in secret_texts:
        try:
            secrets.append(parse_secret(item))
        except FieldError as exc:
            errors.append(RowError(line, exc.column, str(exc)))
    try:
        contact_list = parse_contacts(_split(get("contacts") or ""))
    except FieldError as exc:
        errors.append(RowError(line, exc.column, str(exc)))
    try:
        hub_id = parse_hub_id(get("hub_id") or "")
    except FieldError as exc:
        errors.append(RowError(line, exc.column, str(exc)))
    if ips and secret_texts and len(secret_texts) != len(ips):
        errors.append(
            RowError(
                line, "stb_secret", f"{len(secret_texts)} secrets for {len(ips)} STB IPs (give one per IP)"
            )
        )
    if errors:
        return None, errors
    sub = Subscriber(
        uid=uid,
        name=name,
        language=language,
        address=Address(line_text, *parts),
        notes=notes,
        hub_id=hub_id,
        contacts=contact_list,
        stbs=tuple(Stb(ip=ip, secret=secrets[i] if secrets else None) for i, ip in enumerate(ips)),
    )
    return sub, []


def _rows(text: str) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvFormatError("the file is empty (a header row is needed)") from None
    header = [h.strip().lower() for h in header]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise CsvFormatError(
            f"line 1: unknown column(s) {', '.join(unknown)}; known: {', '.join(CSV_COLUMNS)}"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise CsvFormatError(f"line 1: missing column(s) {', '.join(missing)}")
    dupes = {h for h in header if header.count(h) > 1}
    if dupes:
        raise CsvFormatError(f"line 1: column(s) given twice: {', '.join(sorted(dupes))}")
    width = len(header)
    start = reader.line_num + 1
    for values in reader:
        line, start = start, reader.line_num + 1
        if not "".join(values).strip():
            continue
        if len(values) != width:
            yield line, {"__width__": f"{len(values)} fields, the header has {width}"}
            continue
        yield line, dict(zip(header, values, strict=True))


def _same(a: Subscriber, b: Subscriber, secrets_managed: bool) -> bool:
    def key(s: Subscriber) -> tuple[object, ...]:
        stb_key = tuple((t.ip, t.secret if secrets_managed else None) for t in s.stbs)
        return (s.name, s.language, s.address, s.notes, s.contacts, stb_key, s.hub_id)

    return key(a) == key(b)


class _RowSource:
    """Parses and checks rows chunk by chunk, in file order."""

    def __init__(self, text: str, default_language: str) -> None:
        self._rows = _rows(text)
        self._default_language = default_language
        self._first_line_of_uid: dict[str, int] = {}
        self._owner_of_ip: dict[str, tuple[int, str]] = {}
        self._owner_of_hub: dict[str, tuple[int, str]] = {}
        self.done = False

    def next_chunk(self) -> tuple[list[tuple[int, Subscriber]], list[RowError], int]:
        chunk: list[tuple[int, Subscriber]] = []
        errors: list[RowError] = []
        rejected = 0
        for line, raw in self._rows:
            if "__width__" in raw:
                errors.append(RowError(line, "*", raw["__width__"]))
                rejected += 1
                continue
            sub, row_errors = parse_row(line, raw, self._default_language)
            if sub is not None:
                row_errors = _file_conflicts(
                    line, sub, self._first_line_of_uid, self._owner_of_ip, self._owner_of_hub
                )
            if row_errors or sub is None:
                errors.extend(row_errors)
                rejected += 1
                continue
            chunk.append((line, sub))
            if len(chunk) >= CHUNK_ROWS:
                return chunk, errors, rejected
        self.done = True
        return chunk, errors, rejected


async def import_csv(
    directory: Directory,
    data: bytes,
    *,
    strict: bool = False,
    dry_run: bool = False,
    default_language: str = "en",
    progress: bool | None = None,
    on_change: Callable[[Subscriber], None] | None = None,
) -> ImportResult:
    """Validate and upsert every row of a CSV file's bytes (see the module docstring)."""
    text, encoding = decode_csv(data)
    result = ImportResult(encoding=encoding)
    source = _RowSource(text, default_language)
    header_line = text.split("\n", 1)[0]
    header = [h.strip().lower() for h in next(csv.reader([header_line]), [])]
    secrets_managed = "stb_secret" in header
    # Like stb_secret: a file without the hub_id column does not manage hub ids (stored ones stay).
    hubs_managed = "hub_id" in header

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=max(text.count("\n"), 1), unit="rows", disable=not show, file=sys.stderr, leave=False)
    changed: list[Subscriber] = []
    now = utcnow()
    async with directory.engine.connect() as conn:
        trans = await conn.begin()
        try:
            # Take the write lock first, so the reads below see what we will write against (SQLite).
            await conn.execute(
                update(subscribers).where(subscribers.c.id < 0).values(name=subscribers.c.name)
            )
            initially_empty = (await conn.execute(select(subscribers.c.id).limit(1))).first() is None
            while not source.done:
                chunk, errors, rejected = source.next_chunk()
                result.errors.extend(errors)
                result.rejected += rejected
                if chunk:
                    await _apply_chunk(
                        conn, chunk, result, (secrets_managed, hubs_managed), now, changed, initially_empty
                    )
                bar.update(len(chunk) + rejected)
            if dry_run or (strict and result.rejected):
                await trans.rollback()
            else:
                await trans.commit()
                result.committed = True
        except BaseException:
            await trans.rollback()
            raise
        finally:
            bar.close()
    result.errors.sort(key=lambda e: e.line)
    if result.committed and on_change is not None:
        for sub in changed:
            on_change(sub)
    return result


def _file_conflicts(
    line: int,
    sub: Subscriber,
    first_line_of_uid: dict[str, int],
    owner_of_ip: dict[str, tuple[int, str]],
    owner_of_hub: dict[str, tuple[int, str]],
) -> list[RowError]:
    if sub.uid in first_line_of_uid:
        return [RowError(line, "uid", f'"{sub.uid}" is already on line {first_line_of_uid[sub.uid]}')]
    errors = [
        RowError(
            line, "stb_ip", f"{s.ip} is already on line {owner_of_ip[s.ip][0]} (uid {owner_of_ip[s.ip][1]})"
        )
        for s in sub.stbs
        if s.ip in owner_of_ip
    ]
    if sub.hub_id is not None and sub.hub_id in owner_of_hub:
        first, owner = owner_of_hub[sub.hub_id]
        errors.append(RowError(line, "hub_id", f"{sub.hub_id} is already on line {first} (uid {owner})"))
    if not errors:
        first_line_of_uid[sub.uid] = line
        for s in sub.stbs:
            owner_of_ip[s.ip] = (line, sub.uid)
        if sub.hub_id is not None:
            owner_of_hub[sub.hub_id] = (line, sub.uid)
    return errors


async def _apply_chunk(
    conn: AsyncConnection,
    chunk: list[tuple[int, Subscriber]],
    result: ImportResult,
    managed: tuple[bool, bool],
    now: datetime,
    changed: list[Subscriber],
    initially_empty: bool,
) -> None:
    secrets_managed, hubs_managed = managed
    ids: dict[str, int] = {}
    existing: dict[str, Subscriber] = {}
    owners: dict[str, str] = {}
    hub_owners: dict[str, str] = {}
    if not initially_empty:
        # Only rows that were in the database before this import can clash or be updated: within
        # the file, uids and IPs are already unique (see _file_conflicts).
        uids = [sub.uid for _, sub in chunk]
        query = select(subscribers.c.id, subscribers.c.uid).where(subscribers.c.uid.in_(uids))
        ids = {r.uid: int(r.id) for r in await conn.execute(query)}
        if ids:
            found = await load_subscribers(conn, select(subscribers).where(subscribers.c.uid.in_(list(ids))))
            existing = {s.uid: s for s in found}
        all_ips = [t.ip for _, sub in chunk for t in sub.stbs]
        owner_query = (
            select(stbs.c.ip, subscribers.c.uid)
            .join(subscribers, subscribers.c.id == stbs.c.subscriber_id)
            .where(stbs.c.ip.in_(all_ips))
        )
        owners = {r.ip: r.uid for r in await conn.execute(owner_query)}
        hubs = [sub.hub_id for _, sub in chunk if sub.hub_id is not None]
        if hubs:
            hub_query = select(subscribers.c.hub_id, subscribers.c.uid).where(subscribers.c.hub_id.in_(hubs))
            hub_owners = {r.hub_id: r.uid for r in await conn.execute(hub_query)}
    new: list[tuple[int, Subscriber]] = []
    for line, sub in chunk:
        old = existing.get(sub.uid)
        if not hubs_managed:
            sub = dataclasses.replace(sub, hub_id=old.hub_id if old is not None else None)
        taken = [t.ip for t in sub.stbs if owners.get(t.ip, sub.uid) != sub.uid]
        refused = [
            RowError(line, "stb_ip", f"{ip} already belongs to subscriber {owners[ip]}") for ip in taken
        ]
        if sub.hub_id is not None and hub_owners.get(sub.hub_id, sub.uid) != sub.uid:
            owner = hub_owners[sub.hub_id]
            refused.append(RowError(line, "hub_id", f"{sub.hub_id} already belongs to subscriber {owner}"))
        if refused:
            result.errors.extend(refused)
            result.rejected += 1
            continue
        if old is None:
            new.append((line, sub))
        elif _same(old, sub, secrets_managed):
            result.unchanged += 1
        else:
            sid = ids[sub.uid]
            await conn.execute(
                update(subscribers).where(subscribers.c.id == sid).values(subscriber_row(sub, now))
            )
            await write_children(conn, sid, sub, keep_secrets=not secrets_managed)
            result.updated += 1
            changed.append(sub)
    if not new:
        return
    naive_now = now.astimezone(UTC).replace(tzinfo=None)
    stamp = subscribers.c.created_at.type.bind_processor(conn.dialect)
    when = stamp(naive_now) if stamp is not None else naive_now
    sub_columns = (
        "uid",
        "name",
        "language",
        "address_line",
        *ADDRESS_PARTS,
        "notes",
        "hub_id",
        "created_at",
        "updated_at",
    )
    rows = [
        (sub.uid, sub.name, sub.language, *_address_values(sub.address), sub.notes, sub.hub_id, when, when)
        for _, sub in new
    ]
    if conn.dialect.name == "sqlite":
        # We hold SQLite's write lock (taken at the start of the import): the ids are ours to give,
        # which saves reading them back. PostgreSQL's sequence must hand them out itself.
        top = (await conn.execute(select(func.max(subscribers.c.id)))).scalar() or 0
        new_ids = list(range(top + 1, top + 1 + len(new)))
        await _bulk_insert(conn, "subscribers", ("id", *sub_columns),
                           [(i, *row) for i, row in zip(new_ids, rows, strict=True)])  # fmt: skip
        id_of = {sub.uid: i for i, (_, sub) in zip(new_ids, new, strict=True)}
    else:
        await _bulk_insert(conn, "subscribers", sub_columns, rows)
        query = select(subscribers.c.id, subscribers.c.uid).where(
            subscribers.c.uid.in_([s.uid for _, s in new])
        )
        id_of = {r.uid: int(r.id) for r in await conn.execute(query)}
    await _bulk_insert(
        conn,
        "stbs",
        ("subscriber_id", "ip", "secret_hex"),
        [(id_of[sub.uid], t.ip, t.secret.hex() if t.secret else None) for _, sub in new for t in sub.stbs],
    )
    await _bulk_insert(
        conn,
        "contacts",
        ("subscriber_id", "position", "name", "phone"),
        [(id_of[sub.uid], i, c.name, c.phone) for _, sub in new for i, c in enumerate(sub.contacts)],
    )
    result.added += len(new)
    changed.extend(sub for _, sub in new)


def _address_values(address: Address) -> tuple[str, ...]:
    return (address.line, *(getattr(address, p) for p in ADDRESS_PARTS))


async def _bulk_insert(
    conn: AsyncConnection, table: str, columns: tuple[str, ...], rows: list[tuple[object, ...]]
) -> None:
    """executemany at the driver level: the new rows of an import are plain values already
    validated, and SQLAlchemy's per-row parameter processing would cost more than the insert."""
    if not rows:
        return
    style = conn.dialect.paramstyle
    if style == "qmark":
        marks = ", ".join("?" for _ in columns)
    elif style in ("numeric_dollar", "numeric"):
        sign = "$" if style == "numeric_dollar" else ":"
        marks = ", ".join(f"{sign}{i}" for i in range(1, len(columns) + 1))
    else:
        marks = ", ".join("%s" for _ in columns)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
    await conn.exec_driver_sql(sql, rows)


async def export_csv(directory: Directory, path: str | Path, *, with_secrets: bool = True) -> int:
    """Write every subscriber to `path` (UTF-8) in the import format; returns the number of rows.

    With secrets the file is created readable by its owner only.
    """
    columns = [c for c in CSV_COLUMNS if with_secrets or c != "stb_secret"]
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if with_secrets else 0o644)
    count = 0
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        offset = 0
        while True:
            batch = await directory.list(limit=CHUNK_ROWS, offset=offset)
            if not batch:
                break
            offset += len(batch)
            for sub in batch:
                values = {
                    "uid": sub.uid,
                    "name": sub.name,
                    "language": sub.language,
                    "address": sub.address.line,
                    "notes": sub.notes,
                    "stb_ip": LIST_SEPARATOR.join(t.ip for t in sub.stbs),
                    "stb_secret": LIST_SEPARATOR.join(t.secret.hex() if t.secret else "" for t in sub.stbs)
                    if any(t.secret for t in sub.stbs)
                    else "",
                    "contacts": LIST_SEPARATOR.join(f"{c.name}={c.phone}" for c in sub.contacts),
                    "hub_id": sub.hub_id or "",
                } | {p: getattr(sub.address, p) for p in ADDRESS_PARTS}
                writer.writerow([values[c] for c in columns])
                count += 1
    os.replace(tmp, target)
    return count
