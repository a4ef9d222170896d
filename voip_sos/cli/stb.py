"""`voip-sos stb press|cancel|update|heartbeat|silent`: the reference STB agent from the command line.

Exit codes for the requests: 0 RECEIPT, 2 REJECT, 3 no backend answered (1 for local failures,
e.g. a port that cannot be bound). `--json` prints one object, specified in docs/cli-json.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from voip_sos.config import Config
from voip_sos.config_values import HostPort, parse_hostport
from voip_sos.directory import Directory
from voip_sos.hub.aio import open_hub_client
from voip_sos.sos.retry import GIVE_UP_S
from voip_sos.sos.wire import MsgType
from voip_sos.stb.aio import open_stb_client
from voip_sos.stb.events import ReceiptReceived, RejectReceived, StatusReceived
from voip_sos.stb.hub_relay import HUB_WAIT_S, CancelOutcome, PressOutcome, cancel_with_hub, press_with_hub

__all__ = ["EXIT_NO_ANSWER", "EXIT_RECEIPT", "EXIT_REJECT", "parse_duration", "register"]

EXIT_RECEIPT, EXIT_FAILED, EXIT_REJECT, EXIT_NO_ANSWER = 0, 1, 2, 3
FOLLOW_LIMIT_S = 300.0


def register(sub: Any) -> None:
    p = sub.add_parser("stb", help="act as an STB: send SOS, CANCEL, UPDATE, HEARTBEAT; list silent STBs")
    ssub = p.add_subparsers(dest="stb_command", metavar="ACTION")
    ssub.required = True
    press = ssub.add_parser("press", help="press the SOS key")
    _request_options(press)
    press.add_argument("--test", action="store_true", help="a test call (calls emergency.test_number only)")
    _hub_options(press, "also instruct the home hub; forward its codes as UPDATEs")
    press.set_defaults(handler=_request_handler(MsgType.SOS))
    cancel = ssub.add_parser("cancel", help="cancel the open incident (false alarm)")
    _request_options(cancel)
    _hub_options(cancel, "also tell the home hub to revoke every temporary code")
    cancel.set_defaults(handler=_request_handler(MsgType.CANCEL))
    upd = ssub.add_parser("update", help="send later facts for the open incident")
    _request_options(upd)
    upd.add_argument("--door-code", metavar="CODE")
    upd.add_argument("--parking-code", metavar="CODE")
    upd.add_argument("--note", metavar="TEXT")
    upd.set_defaults(handler=_request_handler(MsgType.UPDATE))
    hb = ssub.add_parser("heartbeat", help="tell the backend this STB is alive")
    _request_options(hb)
    hb.set_defaults(handler=_request_handler(MsgType.HEARTBEAT))
    silent = ssub.add_parser("silent", help="provisioned STBs with no heartbeat since a time")
    silent.add_argument(
        "--since", required=True, type=parse_duration, metavar="DURATION", help="e.g. 90s, 10m, 2h, 1d"
    )
    silent.add_argument("--json", action="store_true", help="machine-readable output (docs/cli-json.md)")
    silent.set_defaults(handler=_silent)


def parse_duration(text: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 10m, 2h or 1d, got {text!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return timedelta(seconds=float(m.group(1)) * unit)


def _backend(text: str) -> HostPort:
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _request_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        action="append",
        type=_backend,
        default=[],
        metavar="HOST:PORT",
        help="primary, then secondary backend (default: sos.listen, 0.0.0.0 read as 127.0.0.1)",
    )
    p.add_argument(
        "--source-ip", metavar="IP", default="127.0.0.1", help="the STB's fixed IP: carried and bound"
    )
    p.add_argument("--source-port", type=int, default=0, metavar="PORT", help="local port (default: any)")
    p.add_argument("--secret", metavar="HEX", help="the STB's secret (default: sos.operator_key)")
    p.add_argument("--timeout", type=float, default=GIVE_UP_S, metavar="S", help="give up after S seconds")
    p.add_argument("--follow", action="store_true", help="after the RECEIPT, print each STATUS until closed")
    p.add_argument(
        "--follow-limit", type=float, default=FOLLOW_LIMIT_S, metavar="S", help="stop following after S"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output (docs/cli-json.md)")


def _hub_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--hub", type=_backend, metavar="HOST:PORT", help=f"the home hub (docs/hub.md): {what}")
    p.add_argument("--hub-key", metavar="HEX", help="the STB-hub key (the hub's hub.stb_key)")
    p.add_argument(
        "--hub-wait", type=float, default=HUB_WAIT_S, metavar="S", help="wait at most S for the hub's answer"
    )


def _request_handler(kind: MsgType) -> Any:
    def handler(args: argparse.Namespace, cfg: Config) -> int:
        return asyncio.run(_request(kind, args, cfg))

    return handler


def _status_json(st: StatusReceived) -> dict[str, Any]:
    return {
        "incident_id": st.incident_id,
        "status": st.status.name.lower(),
        "seq": st.status_seq,
        "detail": st.detail,
    }


async def _request(kind: MsgType, args: argparse.Namespace, cfg: Config) -> int:
    backends = args.backend or [cfg.sos.listen]
    if len(backends) > 2:
        return _fail(args, "at most two --backend (primary and secondary)", EXIT_FAILED)
    targets = [("127.0.0.1" if b.host in ("0.0.0.0", "::") else b.host, b.port) for b in backends]
    secret_hex = args.secret or cfg.sos.operator_key
    if not secret_hex:
        return _fail(args, "no key: give --secret HEX or configure sos.operator_key", EXIT_FAILED)
    try:
        key = bytes.fromhex(secret_hex)
    except ValueError:
        return _fail(args, "--secret: expected hex digits", EXIT_FAILED)
    fields: dict[str, Any] = {}
    if kind is MsgType.UPDATE:
        fields = {"door_code": args.door_code, "parking_code": args.parking_code, "note": args.note}
        if not any(fields.values()):
            return _fail(args, "update needs --door-code, --parking-code or --note", EXIT_FAILED)
    hub_key: bytes | None = None
    if getattr(args, "hub", None) is not None:
        try:
            hub_key = bytes.fromhex(args.hub_key or "")
        except ValueError:
            hub_key = b""
        if not hub_key:
            return _fail(args, "--hub needs --hub-key HEX (the hub's hub.stb_key)", EXIT_FAILED)
    try:
        client = await open_stb_client(
            args.source_ip, key, targets, bind=(args.source_ip, args.source_port), give_up_s=args.timeout
        )
    except OSError as exc:
        return _fail(args, f"cannot send from {args.source_ip}: {exc.strerror}", EXIT_FAILED)
    hub = None
    hub_out: dict[str, Any] | None = None
    try:
        if hub_key is not None:
            try:
                hub = await open_hub_client(
                    hub_key, (args.hub.host, args.hub.port), local_host=args.source_ip
                )
            except OSError as exc:
                return _fail(args, f"cannot reach the hub from {args.source_ip}: {exc.strerror}", EXIT_FAILED)
        if hub is not None and kind is MsgType.SOS:
            pressed = await press_with_hub(client, hub, test=args.test, hub_wait_s=args.hub_wait)
            answer, hub_out = pressed.answer, _press_hub_json(args, pressed)
        elif hub is not None and kind is MsgType.CANCEL:
            cancelled = await cancel_with_hub(client, hub, hub_wait_s=args.hub_wait)
            answer, hub_out = cancelled.answer, _cancel_hub_json(args, cancelled)
        else:
            answer = await client.request(kind, test=getattr(args, "test", False), **fields)
        if hub_out is not None and not args.json:
            print(_hub_line(hub_out), flush=True)
        statuses: list[StatusReceived] = []
        if isinstance(answer, ReceiptReceived) and args.follow:
            if not args.json:
                print(_receipt_line(answer), flush=True)
            statuses = await client.follow(args.follow_limit)
            if not args.json:
                for st in statuses:
                    detail = f": {st.detail}" if st.detail else ""
                    print(f"STATUS {st.status.name.lower()} incident {st.incident_id}{detail}", flush=True)
    finally:
        client.close()
        if hub is not None:
            hub.close()
    out: dict[str, Any] = {
        "command": kind.name.lower(),
        "stb_ip": args.source_ip,
        "request_id": answer.request_id.hex(),
        "tries": answer.tries,
        "elapsed_ms": round(answer.elapsed_s * 1000, 3),
        "incident_id": None,
        "backend": None,
        "reason": None,
        "backend_time": None,
    }
    if isinstance(answer, ReceiptReceived):
        out |= {
            "result": "receipt",
            "incident_id": answer.incident_id,
            "backend": f"{answer.backend[0]}:{answer.backend[1]}",
        }
        code = EXIT_RECEIPT
    elif isinstance(answer, RejectReceived):
        out |= {
            "result": "reject",
            "reason": answer.reason.name.lower(),
            "backend": f"{answer.backend[0]}:{answer.backend[1]}",
            "backend_time": datetime.fromtimestamp(answer.backend_time_ms / 1000, UTC).isoformat(
                timespec="milliseconds"
            ),
        }
        code = EXIT_REJECT
    else:
        out["result"] = "timeout"
        code = EXIT_NO_ANSWER
    if args.follow:
        out["statuses"] = [_status_json(st) for st in statuses]
    if hub_out is not None:
        out["hub"] = hub_out
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    elif isinstance(answer, ReceiptReceived):
        if not args.follow:
            print(_receipt_line(answer))
    elif isinstance(answer, RejectReceived):
        print(
            f"REJECT {out['reason']} from {out['backend']} after {_tries(answer.tries)} "
            f"(backend time {out['backend_time']})"
        )
    else:
        print(f"no backend answered: {_tries(answer.tries)} in {answer.elapsed_s:.1f} s", file=sys.stderr)
    return code


def _iso_ms(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _answer_word(answer: Any) -> str:
    if isinstance(answer, ReceiptReceived):
        return "receipt"
    return "reject" if isinstance(answer, RejectReceived) else "timeout"


def _press_hub_json(args: argparse.Namespace, pressed: PressOutcome) -> dict[str, Any]:
    codes = pressed.codes
    return {
        "hub": str(args.hub),
        "answered": codes is not None,
        "final": bool(codes and codes.final),
        "door_state": codes.door_state.name.lower() if codes else None,
        "door_code": codes.door_code if codes else None,
        "door_valid_until": _iso_ms(codes.door_valid_until_ms) if codes else None,
        "parking_state": codes.parking_state.name.lower() if codes else None,
        "parking_code": codes.parking_code if codes else None,
        "parking_valid_until": _iso_ms(codes.parking_valid_until_ms) if codes else None,
        "updates": [
            {"door_code": u.door_code, "parking_code": u.parking_code, "result": _answer_word(u.answer)}
            for u in pressed.updates
        ],
    }


def _cancel_hub_json(args: argparse.Namespace, cancelled: CancelOutcome) -> dict[str, Any]:
    r = cancelled.revoked
    return {
        "hub": str(args.hub),
        "answered": r is not None,
        "cleared": r.cleared if r else None,
        "failed": r.failed if r else None,
    }


def _hub_line(hub: dict[str, Any]) -> str:
    if not hub["answered"]:
        return f"HUB {hub['hub']} did not answer"
    if "door_state" not in hub:
        return f"HUB revoked: {hub['cleared']} cleared, {hub['failed']} not confirmed"
    door = hub["door_code"] or hub["door_state"]
    parking = hub["parking_code"] or hub["parking_state"]
    sent = ", ".join(f"UPDATE {u['result']}" for u in hub["updates"]) or "no UPDATE"
    return f"HUB door code {door}, parking pass {parking} ({sent})"


def _receipt_line(answer: ReceiptReceived) -> str:
    what = f"incident {answer.incident_id}" if answer.incident_id else "no open incident"
    tries = _tries(answer.tries)
    backend = f"{answer.backend[0]}:{answer.backend[1]}"
    return f"RECEIPT {what} in {answer.elapsed_s * 1000:.1f} ms after {tries} from {backend}"


def _tries(n: int) -> str:
    return "1 try" if n == 1 else f"{n} tries"


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}, ensure_ascii=False))
    print(f"error: {message}", file=sys.stderr)
    return code


def _silent(args: argparse.Namespace, cfg: Config) -> int:
    async def go() -> int:
        since = datetime.now(UTC) - args.since
        directory = await Directory.open(cfg.directory.url)
        try:
            matches = await directory.silent_stbs(since)
        finally:
            await directory.close()
        rows = [
            {
                "ip": m.stb.ip,
                "uid": m.subscriber.uid,
                "name": m.subscriber.name,
                "last_seen_at": m.stb.last_seen_at.isoformat() if m.stb.last_seen_at else None,
            }
            for m in matches
        ]
        if args.json:
            print(json.dumps({"since": since.isoformat(), "stbs": rows}, ensure_ascii=False))
        else:
            for r in rows:
                print(f"{r['ip']}\t{r['uid']}\t{r['name']}\tlast seen {r['last_seen_at'] or 'never'}")
            print(f"{len(rows)} STB(s) silent since {since.isoformat(timespec='seconds')}", file=sys.stderr)
        return 0

    return asyncio.run(go())
