"""`voip-sos db upgrade|downgrade|current`: apply the Alembic migrations of the directory database."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from voip_sos.config import Config


def register(sub: Any) -> None:
    p = sub.add_parser("db", help="database schema (Alembic migrations)")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION")
    dsub.required = True
    up = dsub.add_parser("upgrade", help="apply pending migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=_upgrade)
    down = dsub.add_parser("downgrade", help="revert migrations down to REVISION (e.g. -1, base)")
    down.add_argument("revision")
    down.set_defaults(handler=_downgrade)
    cur = dsub.add_parser("current", help="print the schema revision")
    cur.set_defaults(handler=_current)


def _upgrade(args: argparse.Namespace, cfg: Config) -> int:
    from voip_sos.directory.schema import upgrade

    rev = asyncio.run(upgrade(cfg.directory.url, args.revision))
    print(f"database at revision {rev}")
    return 0


def _downgrade(args: argparse.Namespace, cfg: Config) -> int:
    from voip_sos.directory.schema import downgrade

    rev = asyncio.run(downgrade(cfg.directory.url, args.revision))
    print(f"database at revision {rev}")
    return 0


def _current(args: argparse.Namespace, cfg: Config) -> int:
    from voip_sos.directory.schema import current_revision

    print(asyncio.run(current_revision(cfg.directory.url)) or "base")
    return 0
