"""`voip-sos directory …`: provision subscribers by hand or from a CRM export, and look them up.

Exit codes: 0 done; 1 nothing found, a conflict, or bad CSV rows; 2 a refused argument value or
configuration. `--json` output is specified in docs/cli-json.md and is stable.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from voip_sos.config import Config
from voip_sos.directory import ADDRESS_PARTS, Address, Directory, Stb, StbMatch, Subscriber
from voip_sos.directory.importer import CsvFormatError, export_csv, import_csv
from voip_sos.directory.validate import (
    FieldError,
    normalize_ip,
    parse_contacts,
    parse_hub_id,
    parse_language,
    parse_secret,
    parse_text,
    parse_uid,
)
from voip_sos.errors import DirectoryError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(sub: Any) -> None:
    p = sub.add_parser("directory", help="subscribers: provisioning, lookup, CSV import/export")
    dsub = p.add_subparsers(dest="directory_command", metavar="ACTION")
    dsub.required = True

    add = dsub.add_parser("add", help="add a subscriber")
    _record_options(add, required=True)
    add.set_defaults(handler=_run(_add))

    upd = dsub.add_parser("update", help="change a subscriber (only the options given)")
    _record_options(upd, required=False)
    upd.set_defaults(handler=_run(_update))

    rem = dsub.add_parser("remove", help="remove a subscriber")
    rem.add_argument("--uid", required=True)
    _json(rem)
    rem.set_defaults(handler=_run(_remove))

    show = dsub.add_parser("show", help="print one subscriber")
    show.add_argument("--uid", required=True)
    _json(show)
    show.set_defaults(handler=_run(_show))

    lst = dsub.add_parser("list", help="list subscribers by uid")
    lst.add_argument("--limit", type=int, default=None, metavar="N")
    _json(lst)
    lst.set_defaults(handler=_run(_list))

    look = dsub.add_parser("lookup", help="resolve an STB's fixed IP to its subscriber (the SOS path)")
    look.add_argument("ip")
    _json(look)
    look.set_defaults(handler=_run(_lookup))

    imp = dsub.add_parser("import", help="validated upsert of a CRM CSV export (docs/directory-csv.md)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--strict", action="store_true", help="apply nothing if any row is bad")
    imp.add_argument("--dry-run", action="store_true", help="validate and count, write nothing")
    _json(imp)
    imp.set_defaults(handler=_run(_import))

    exp = dsub.add_parser("export", help="write every subscriber as CSV (the import format)")
    exp.add_argument("file", type=Path)
    exp.add_argument("--without-secrets", action="store_true", help="leave out the stb_secret column")
    _json(exp)
    exp.set_defaults(handler=_run(_export))


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output (docs/cli-json.md)")


def _record_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--uid", required=True, help="the operator's subscriber id")
    p.add_argument("--name", required=required)
    p.add_argument("--stb-ip", action="append", default=[], metavar="IP", help="repeat for several STBs")
    p.add_argument(
        "--stb-secret",
        action="append",
        default=[],
        metavar="HEX",
        help="per-STB HMAC key: once for all --stb-ip, or once per --stb-ip; '' clears",
    )
    p.add_argument("--address", required=required, metavar="LINE", help="the address as one line")
    for part in ADDRESS_PARTS:
        p.add_argument(f"--{part}", default=None)
    p.add_argument("--language", choices=["en", "zh"], default=None)
    p.add_argument("--notes", default=None, metavar="TEXT", help="medical notes")
    p.add_argument(
        "--hub-id", default=None, metavar="ID", help="the home hub's id (docs/hub.md); '' removes it"
    )
    p.add_argument(
        "--contact",
        action="append",
        default=[],
        metavar="NAME=PHONE",
        help="repeat; the order is the call order",
    )
    _json(p)


def _run(fn: Callable[[Directory, argparse.Namespace, Config], Awaitable[int]]) -> Callable[..., int]:
    def handler(args: argparse.Namespace, cfg: Config) -> int:
        async def go() -> int:
            directory = await Directory.open(cfg.directory.url)
            try:
                return await fn(directory, args, cfg)
            finally:
                await directory.close()

        try:
            return asyncio.run(go())
        except FieldError as exc:
            return _fail(args, f"--{exc.column.replace('_', '-')}: {exc}", EXIT_USAGE)
        except DirectoryError as exc:
            return _fail(args, str(exc), EXIT_FAILED)

    return handler


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}, ensure_ascii=False))
    print(f"error: {message}", file=sys.stderr)
    return code


# -- building records from options ---------------------------------------------------------------


def _stbs(ips: list[str], secrets: list[str], old: tuple[Stb, ...] = ()) -> tuple[Stb, ...]:
    kept = {s.ip: s.secret for s in old}
    normal = [normalize_ip(ip, "stb_ip") for ip in ips] if ips else [s.ip for s in old]
    if len(set(normal)) != len(normal):
        raise FieldError("stb_ip", "the same IP is given twice")
    if secrets and len(secrets) not in (1, len(normal)):
        raise FieldError(
            "stb_secret", f"{len(secrets)} secrets for {len(normal)} STB IPs (give one, or one per IP)"
        )
    keys = [parse_secret(s) for s in secrets]
    if not normal:
        raise FieldError("stb_ip", "at least one STB IP is needed")

    def secret_for(i: int, ip: str) -> bytes | None:
        if not keys:
            return kept.get(ip)
        return keys[0] if len(keys) == 1 else keys[i]

    return tuple(Stb(ip=ip, secret=secret_for(i, ip)) for i, ip in enumerate(normal))


def _address(args: argparse.Namespace, old: Address | None) -> Address:
    line = parse_text("address", args.address, required=True) if args.address is not None else None
    base = old or Address(line or "")
    parts = {p: parse_text(p, getattr(args, p)) for p in ADDRESS_PARTS if getattr(args, p) is not None}
    return dataclasses.replace(base, line=line if line is not None else base.line, **parts)


def _subscriber_from(args: argparse.Namespace, cfg: Config, old: Subscriber | None) -> Subscriber:
    uid = parse_uid(args.uid)
    name = parse_text("name", args.name, required=True) if args.name is not None else None
    language = parse_language(args.language or "", cfg.voice.language) if args.language or not old else None
    notes = parse_text("notes", args.notes, limit=4000) if args.notes is not None else None
    contacts = parse_contacts(args.contact) if args.contact or not old else None
    hub_id = parse_hub_id(args.hub_id) if args.hub_id is not None else (old.hub_id if old else None)
    return Subscriber(
        uid=uid,
        name=name if name is not None else (old.name if old else ""),
        language=language or (old.language if old else cfg.voice.language),
        address=_address(args, old.address if old else None),
        contacts=contacts if contacts is not None else (old.contacts if old else ()),
        stbs=_stbs(args.stb_ip, args.stb_secret, old.stbs if old else ()),
        notes=notes if notes is not None else (old.notes if old else ""),
        hub_id=hub_id,
    )


# -- output ---------------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def subscriber_json(sub: Subscriber) -> dict[str, Any]:
    """The stable JSON form of a subscriber (docs/cli-json.md). Secrets appear only as set / not set."""
    return {
        "uid": sub.uid,
        "name": sub.name,
        "language": sub.language,
        "address": dataclasses.asdict(sub.address),
        "address_full": sub.address.full(),
        "notes": sub.notes,
        "stbs": [
            {"ip": s.ip, "secret": "set" if s.secret else "not set", "last_seen_at": _iso(s.last_seen_at)}
            for s in sub.stbs
        ],
        "contacts": [{"name": c.name, "phone": c.phone} for c in sub.contacts],
        "hub_id": sub.hub_id,
        "created_at": _iso(sub.created_at),
        "updated_at": _iso(sub.updated_at),
    }


def _print_subscriber(sub: Subscriber, heading: str = "") -> None:
    if heading:
        print(heading)
    rows: list[tuple[str, str]] = [
        ("uid", sub.uid),
        ("name", sub.name),
        ("language", sub.language),
        ("address", sub.address.line),
    ]
    rows += [(f"  {p}", getattr(sub.address, p)) for p in ADDRESS_PARTS if getattr(sub.address, p)]
    for s in sub.stbs:
        seen = _iso(s.last_seen_at) or "never"
        rows.append(("stb", f"{s.ip}  (secret {'set' if s.secret else 'not set'}, last seen {seen})"))
    rows += [(f"contact {i}", f"{c.name}  {c.phone}") for i, c in enumerate(sub.contacts, 1)]
    if sub.hub_id:
        rows.append(("hub", sub.hub_id))
    if sub.notes:
        rows.append(("notes", sub.notes))
    rows.append(("updated", _iso(sub.updated_at) or ""))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


def _emit(args: argparse.Namespace, obj: dict[str, Any], human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(obj, ensure_ascii=False, indent=2))
    else:
        human()


# -- commands ------------------------------------------------------------------------------------


async def _add(d: Directory, args: argparse.Namespace, cfg: Config) -> int:
    sub = await d.add(_subscriber_from(args, cfg, None))
    _emit(args, subscriber_json(sub), lambda: _print_subscriber(sub, f"added {sub.uid}"))
    return EXIT_OK


async def _update(d: Directory, args: argparse.Namespace, cfg: Config) -> int:
    old = await d.get(parse_uid(args.uid))
    if old is None:
        return _fail(args, f"no subscriber {args.uid}", EXIT_FAILED)
    sub = await d.replace(_subscriber_from(args, cfg, old))
    _emit(args, subscriber_json(sub), lambda: _print_subscriber(sub, f"updated {sub.uid}"))
    return EXIT_OK


async def _remove(d: Directory, args: argparse.Namespace, cfg: Config) -> int:
    if not await d.remove(args.uid):
        return _fail(args, f"no subscriber {args.uid}", EXIT_FAILED)
    _emit(args, {"removed": args.uid}, lambda: print(f"removed {args.uid}"))
    return EXIT_OK


async def _show(d: Directory, args: argparse.Namespace, cfg: Config) -> int:
    sub = await d.get(args.uid)
    if sub is None:
        return _fail(args, f"no subscriber {args.uid}", EXIT_FAILED)
    _emit(args, subscriber_json(sub), lambda: _print_subscriber(sub))
    return EXIT_OK


async def _list(d: Directory, args: argparse.Namespace, cfg: Config) -> int:
    subs = await d.list(limit=args.limit)
    total = await d.count()

    def human() -> None:
        for s in subs:
            ips = ",".join(t.ip for t in s.stbs)
            print(f"{s.uid}\t{s.name}\t{ips}\t{s.address.full()}")
        print(f"({len(subs)} of {total} subscribers)")

    _emit(args, {"subscribers": [subscriber_json(s) for s in subs], "total": total}, human)
    return EXIT_OK


async def _lookup(d: Directory, args: argparse.Namespace, cfg: Config) -> int:
    normal = normalize_ip(args.ip, "ip")
    match: StbMatch | None = await d.lookup_stb(normal)
    if match is None:
        return _fail(args, f"no subscriber for STB {normal}", EXIT_FAILED)
    stb = match.stb
    obj = {
        "stb": {
            "ip": stb.ip,
            "secret": "set" if stb.secret else "not set",
            "last_seen_at": _iso(stb.last_seen_at),
        },
        "subscriber": subscriber_json(match.subscriber),
    }
    _emit(args, obj, lambda: _print_subscriber(match.subscriber))
    return EXIT_OK


async def _import(d: Directory, args: argparse.Namespace, cfg: Config) -> int:
    try:
        data = await asyncio.to_thread(args.file.read_bytes)
    except OSError as exc:
        return _fail(args, f"cannot read {args.file}: {exc.strerror}", EXIT_FAILED)
    try:
        result = await import_csv(
            d, data, strict=args.strict, dry_run=args.dry_run, default_language=cfg.voice.language
        )
    except CsvFormatError as exc:
        return _fail(args, f"{args.file}: {exc}", EXIT_FAILED)
    for err in result.errors:
        print(f"{args.file}: {err}", file=sys.stderr)
    note = ""
    if args.dry_run:
        note = " (dry run: nothing written)"
    elif not result.committed:
        note = " (--strict: nothing written because of rejected rows)"
    obj = {
        "added": result.added,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "rejected": result.rejected,
        "errors": [{"line": e.line, "column": e.column, "message": e.message} for e in result.errors],
        "encoding": result.encoding,
        "committed": result.committed,
    }
    _emit(args, obj, lambda: print(f"import {args.file}: {result.summary()}{note}"))
    return EXIT_FAILED if result.rejected else EXIT_OK


async def _export(d: Directory, args: argparse.Namespace, cfg: Config) -> int:
    rows = await export_csv(d, args.file, with_secrets=not args.without_secrets)
    _emit(
        args,
        {"rows": rows, "file": str(args.file)},
        lambda: print(f"exported {rows} subscribers to {args.file}"),
    )
    return EXIT_OK
