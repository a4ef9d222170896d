"""The `voip-sos` command line: one subcommand module per area, each registering its parsers.

Exit codes: 0 success, 1 the operation failed or found nothing, 2 usage or configuration error;
subcommands document any others (e.g. `stb press`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from voip_sos import __version__
from voip_sos.config import Config, load_config
from voip_sos.errors import ConfigError
from voip_sos.logs import setup_logging

__all__ = ["Handler", "main"]

# A subcommand handler takes the parsed arguments and the loaded configuration, returns an exit code.
Handler = Callable[[argparse.Namespace, Config], int]

# Modules under voip_sos.cli that contribute subcommands; each has `register(subparsers)`.
COMMAND_MODULES = ("config_cmd", "db", "directory", "prompts", "sip", "serve", "stb", "incidents", "hub")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voip-sos", description="One-key SOS emergency call service")
    parser.add_argument("--version", action="version", version=f"voip-sos {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default ./config.yaml, or $VOIP_SOS_CONFIG)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"voip_sos.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Commands with a configuration of their own (the home hub's hub.yaml) never read config.yaml.
    standalone: Callable[[argparse.Namespace], int] | None = getattr(args, "standalone", None)
    if standalone is not None:
        try:
            return standalone(args)
        except ConfigError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    setup_logging(cfg.log.level, cfg.log.format)
    handler: Handler = args.handler
    try:
        return handler(args, cfg)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
