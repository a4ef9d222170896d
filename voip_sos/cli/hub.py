"""`voip-sos hub ...`: run the home hub, check its hub.yaml, and operator helpers for the link.

    voip-sos hub run [--hub-config hub.yaml]        the hub service (SIGTERM/Ctrl-C stop it)
    voip-sos hub check [--hub-config hub.yaml]      validate and print hub.yaml, secrets masked
    voip-sos hub table                              the hub's keys as a README table
    voip-sos hub instruct HOST:PORT --key HEX       play the STB: ask a hub for codes, print them
    voip-sos hub revoke HUB_ID --broker HOST:PORT   backend side: revoke a hub's temporary codes
    voip-sos hub status HUB_ID --broker HOST:PORT   backend side: is the hub online?

These never read the backend's config.yaml. Exit codes: 0 done, 1 failed or no answer, 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from voip_sos.config_values import parse_hostport
from voip_sos.logs import setup_logging


def register(sub: Any) -> None:
    p = sub.add_parser("hub", help="home hub: door codes, parking pass, revoke")
    hsub = p.add_subparsers(dest="hub_command", metavar="ACTION")
    hsub.required = True

    def with_config(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--hub-config", metavar="PATH", help="hub configuration (default ./hub.yaml or $VOIP_HUB_CONFIG)"
        )

    run = hsub.add_parser("run", help="run the hub service")
    with_config(run)
    run.set_defaults(standalone=_run)
    check = hsub.add_parser("check", help="validate hub.yaml and print it (secrets masked)")
    with_config(check)
    check.set_defaults(standalone=_check)
    table = hsub.add_parser("table", help="print the hub's keys as a markdown table")
    table.set_defaults(standalone=_table)

    ins = hsub.add_parser("instruct", help="act as the STB: send an emergency instruction to a hub")
    ins.add_argument("hub", metavar="HOST:PORT")
    ins.add_argument("--key", default=os.environ.get("VOIP_HUB_HUB_STB_KEY", ""), help="STB-hub key (hex)")
    ins.add_argument("--source", default="127.0.0.1", help="local address to send from (the STB's IP)")
    ins.add_argument("--give-up", type=float, default=120.0, metavar="S")
    ins.add_argument("--revoke", action="store_true", help="send a REVOKE instead of an instruction")
    ins.set_defaults(standalone=_instruct)

    for name, fn, helptext in (
        ("revoke", _revoke, "backend side: clear every temporary code on a hub's lock"),
        ("status", _status, "backend side: print a hub's online/offline status"),
    ):
        q = hsub.add_parser(name, help=helptext)
        q.add_argument("hub_id")
        q.add_argument("--broker", required=True, metavar="HOST:PORT")
        q.add_argument("--username", default=os.environ.get("VOIP_HUB_LINK_USERNAME"))
        q.add_argument("--password", default=os.environ.get("VOIP_HUB_LINK_PASSWORD"))
        q.add_argument("--timeout", type=float, default=30.0, metavar="S")
        q.set_defaults(standalone=fn)


def _load(args: argparse.Namespace) -> Any:
    from voip_sos.hub.config import load_hub_config

    return load_hub_config(args.hub_config)


def _check(args: argparse.Namespace) -> int:
    from voip_sos.hub.config import render_hub_config

    print(render_hub_config(_load(args)), end="")
    print("hub config ok")
    return 0


def _table(args: argparse.Namespace) -> int:
    from voip_sos.hub.config import hub_markdown_table

    print(hub_markdown_table())
    return 0


def _run(args: argparse.Namespace) -> int:
    from voip_sos.hub.service import HubService

    cfg = _load(args)
    setup_logging(cfg.log.level, cfg.log.format)

    async def main() -> None:
        service = HubService(cfg)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.start()
        print(f"hub {service.hub_id} listening on {cfg.hub.listen}", flush=True)
        try:
            await stop.wait()
        finally:
            await service.close()

    asyncio.run(main())
    return 0


def _instruct(args: argparse.Namespace) -> int:
    from voip_sos.hub.aio import open_hub_client

    try:
        hub = parse_hostport(args.hub)
        key = bytes.fromhex(args.key)
    except ValueError as exc:
        print(f"hub instruct: {exc}", file=sys.stderr)
        return 2
    if not key:
        print("hub instruct: --key (or $VOIP_HUB_HUB_STB_KEY) is required", file=sys.stderr)
        return 2

    async def main() -> int:
        endpoint = await open_hub_client(
            key, (hub.host, hub.port), local_host=args.source, give_up_s=args.give_up
        )
        try:
            if args.revoke:
                revoked = await endpoint.revoke()
                if revoked is None:
                    print("no answer from the hub", file=sys.stderr)
                    return 1
                print(json.dumps({"cleared": revoked.cleared, "failed": revoked.failed}))
                return 0 if revoked.failed == 0 else 1
            codes = await endpoint.request_codes()
            if codes is None:
                print("no answer from the hub", file=sys.stderr)
                return 1
            print(
                json.dumps(
                    {
                        "door_state": codes.door_state.name.lower(),
                        "door_code": codes.door_code,
                        "door_valid_until_ms": codes.door_valid_until_ms,
                        "parking_state": codes.parking_state.name.lower(),
                        "parking_code": codes.parking_code,
                        "parking_valid_until_ms": codes.parking_valid_until_ms,
                    }
                )
            )
            return 0
        finally:
            endpoint.close()

    return asyncio.run(main())


def _revoke(args: argparse.Namespace) -> int:
    from voip_sos.hub.link import HubLink, HubLinkError

    async def main() -> int:
        try:
            async with HubLink(
                parse_hostport(args.broker), username=args.username, password=args.password
            ) as link:
                result = await link.revoke(args.hub_id, args.timeout)
        except HubLinkError as exc:
            print(f"hub revoke: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"hub": result.hub_id, "cleared": result.cleared, "failed": result.failed}))
        return 0 if not result.failed else 1

    return asyncio.run(main())


def _status(args: argparse.Namespace) -> int:
    from voip_sos.hub.link import HubLink, HubLinkError

    async def main() -> int:
        try:
            async with HubLink(
                parse_hostport(args.broker), username=args.username, password=args.password
            ) as link:
                # The status topic is retained: the broker replays it on subscription.
                with contextlib.suppress(TimeoutError):
                    while True:
                        event = await link.next_event(min(args.timeout, 5.0))
                        if event.kind == "status" and event.hub_id == args.hub_id:
                            print(event.data["state"])
                            return 0 if event.data["state"] == "online" else 1
        except HubLinkError as exc:
            print(f"hub status: {exc}", file=sys.stderr)
            return 1
        print("unknown (the hub never connected)")
        return 1

    return asyncio.run(main())
