"""`voip-sos incidents list|show`: read the durable record of incidents and their event log.

Exit codes: 0 found, 1 no such incident. `--json` is specified in docs/cli-json.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from voip_sos.config import Config
from voip_sos.directory import Directory
from voip_sos.incidents.store import Incident, IncidentEvent, IncidentStore

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("incidents", help="incidents and their event log")
    isub = p.add_subparsers(dest="incidents_command", metavar="ACTION")
    isub.required = True
    lst = isub.add_parser("list", help="incidents, newest first")
    lst.add_argument("--open", action="store_true", help="only incidents still open")
    lst.add_argument("--limit", type=int, default=100, metavar="N")
    lst.add_argument("--json", action="store_true", help="machine-readable output (docs/cli-json.md)")
    lst.set_defaults(handler=_list)
    show = isub.add_parser("show", help="one incident with its event log")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="machine-readable output (docs/cli-json.md)")
    show.set_defaults(handler=_show)


def incident_json(i: Incident) -> dict[str, Any]:
    return {
        "id": i.id,
        "stb_ip": i.stb_ip,
        "uid": i.uid,
        "test": i.test,
        "state": i.state,
        "opened_at": i.opened_at.isoformat(),
        "closed_at": i.closed_at.isoformat() if i.closed_at else None,
        "close_reason": i.close_reason,
    }


def event_json(e: IncidentEvent) -> dict[str, Any]:
    return {"at": e.at.isoformat(), "kind": e.kind, "request_id": e.request_id, "detail": e.detail}


async def _with_store(cfg: Config, fn: Any) -> int:
    directory = await Directory.open(cfg.directory.url)
    try:
        result: int = await fn(IncidentStore(directory.engine))
        return result
    finally:
        await directory.close()


def _list(args: argparse.Namespace, cfg: Config) -> int:
    async def go(store: IncidentStore) -> int:
        items = await store.list(open_only=args.open, limit=args.limit)
        if args.json:
            print(json.dumps({"incidents": [incident_json(i) for i in items]}, ensure_ascii=False))
            return 0
        for i in items:
            closed = f"closed {i.closed_at.isoformat(timespec='seconds')}" if i.closed_at else "open"
            test = " TEST" if i.test else ""
            print(
                f"{i.id}\t{i.state}{test}\t{i.stb_ip}\t{i.uid}\t"
                f"opened {i.opened_at.isoformat(timespec='seconds')}\t{closed}"
            )
        print(f"{len(items)} incident(s)", file=sys.stderr)
        return 0

    return asyncio.run(_with_store(cfg, go))


def _show(args: argparse.Namespace, cfg: Config) -> int:
    async def go(store: IncidentStore) -> int:
        inc = await store.get(args.id)
        if inc is None:
            message = f"no incident {args.id}"
            if args.json:
                print(json.dumps({"error": message}))
            print(f"error: {message}", file=sys.stderr)
            return 1
        events = await store.events(inc.id)
        if args.json:
            print(
                json.dumps(
                    {**incident_json(inc), "events": [event_json(e) for e in events]}, ensure_ascii=False
                )
            )
            return 0
        for k, v in incident_json(inc).items():
            print(f"{k}: {v}")
        print("events:")
        for e in events:
            detail = " ".join(f"{k}={v}" for k, v in e.detail.items())
            print(f"  {e.at.isoformat(timespec='milliseconds')}  {e.kind}  {detail}")
        return 0

    return asyncio.run(_with_store(cfg, go))
