"""`voip-sos config check`: validate the configuration and print it with secrets masked."""

from __future__ import annotations

import argparse
from typing import Any

from voip_sos.config import Config, markdown_table, render_effective


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    check = csub.add_parser("check", help="validate and print the effective configuration (secrets masked)")
    check.set_defaults(handler=_check)
    table = csub.add_parser("table", help="print every key as the README's markdown table")
    table.set_defaults(handler=_table)


def _check(args: argparse.Namespace, cfg: Config) -> int:
    print(render_effective(cfg), end="")
    print("config ok")
    return 0


def _table(args: argparse.Namespace, cfg: Config) -> int:
    print(markdown_table())
    return 0
