"""`voip-sos config check`: validate the configuration and print it with secrets masked.

Beyond the per-key validation every command gets, `check` also looks at what the keys point to: the
voice model files exist and run offline, and `sos.trust_carried_ip` is only on when every STB in the
directory has its own secret.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
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


async def deep_problems(cfg: Config) -> list[str]:
    """Problems found by looking at the model files and the directory, one line each."""
    from voip_sos.directory import Directory
    from voip_sos.service import sos_problems
    from voip_sos.voice.models import check_models

    problems = check_models(cfg.voice.models, require_files=True)
    if cfg.sos.trust_carried_ip:
        directory = await Directory.open(cfg.directory.url)
        try:
            problems += await sos_problems(cfg, directory)
        finally:
            await directory.close()
    return problems


def _check(args: argparse.Namespace, cfg: Config) -> int:
    problems = asyncio.run(deep_problems(cfg))
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        return 2
    print(render_effective(cfg), end="")
    print("config ok")
    return 0


def _table(args: argparse.Namespace, cfg: Config) -> int:
    print(markdown_table())
    return 0
