"""Parking adapter: ask the residential parking system for a temporary entry pass (SPEC F13).

One HTTP POST of a JSON object whose field names and nesting come from `parking.request_fields`
(our fact -> their dotted path), Bearer token; the pass code and its expiry are read from the reply
at `parking.code_path` / `parking.valid_until_path`. docs/parking-api.md is the contract and shows
how an operator maps another system without code changes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from voip_sos.errors import VoipSosError
from voip_sos.hub.config import ParkingSection

__all__ = ["DEFAULT_REQUEST_FIELDS", "ParkingClient", "ParkingError", "ParkingPass", "PassRequest"]

log = logging.getLogger(__name__)

DEFAULT_REQUEST_FIELDS = {
    "uid": "uid",
    "address": "address",
    "contact_phone": "contact_phone",
    "valid_from": "valid_from",
    "valid_until": "valid_until",
    "reference": "reference",
}


class ParkingError(VoipSosError):
    """The parking system refused, failed or answered something we cannot read."""


@dataclass(frozen=True, slots=True)
class PassRequest:
    """The facts a pass request carries."""

    uid: str
    address: str
    contact_phone: str
    valid_from: float
    """Wall clock, seconds since 1970."""
    valid_until: float
    """Wall clock, seconds since 1970."""
    reference: str
    """Our id for the request (the instruction id), so the parking system can de-duplicate."""


@dataclass(frozen=True, slots=True)
class ParkingPass:
    """What the parking system granted."""

    code: str
    valid_until: float
    """Wall clock, seconds since 1970."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _put(target: dict[str, Any], path: str, value: object) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        nxt = target.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ParkingError(f"request field path {path!r} collides with another field")
        target = nxt
    target[parts[-1]] = value


def _get(data: object, path: str) -> object:
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            raise ParkingError(f"reply has no {path!r}")
    return data


def build_body(req: PassRequest, fields: dict[str, str]) -> dict[str, Any]:
    """The request JSON: each fact at its mapped path; a fact mapped to "" is left out."""
    facts: dict[str, object] = {
        "uid": req.uid,
        "address": req.address,
        "contact_phone": req.contact_phone,
        "valid_from": _iso(req.valid_from),
        "valid_until": _iso(req.valid_until),
        "reference": req.reference,
    }
    body: dict[str, Any] = {}
    for fact, path in {**DEFAULT_REQUEST_FIELDS, **fields}.items():
        if path:
            _put(body, path, facts[fact])
    return body


def read_reply(data: object, code_path: str, valid_until_path: str, fallback_until: float) -> ParkingPass:
    """The pass in a reply; the expiry may be ISO 8601 or epoch seconds, or absent (-> requested)."""
    code = _get(data, code_path)
    if isinstance(code, int) and not isinstance(code, bool):
        code = str(code)
    if not isinstance(code, str) or not code.strip() or len(code) > 64:
        raise ParkingError(f"reply's {code_path!r} is not a pass code: {code!r}")
    try:
        raw_until = _get(data, valid_until_path)
    except ParkingError:
        return ParkingPass(code.strip(), fallback_until)
    if isinstance(raw_until, int | float) and not isinstance(raw_until, bool):
        until = float(raw_until)
    elif isinstance(raw_until, str):
        try:
            parsed = datetime.fromisoformat(raw_until.replace("Z", "+00:00"))
        except ValueError:
            raise ParkingError(f"reply's {valid_until_path!r} is not a time: {raw_until!r}") from None
        until = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    else:
        raise ParkingError(f"reply's {valid_until_path!r} is not a time: {raw_until!r}")
    return ParkingPass(code.strip(), until)


class ParkingClient:
    """Requests passes from `parking.url`."""

    def __init__(self, cfg: ParkingSection) -> None:
        assert cfg.url is not None
        self._cfg = cfg
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        headers = {"Content-Type": "application/json"}
        if self._cfg.token:
            headers["Authorization"] = f"Bearer {self._cfg.token}"
        self._session = aiohttp.ClientSession(headers=headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request_pass(self, req: PassRequest, timeout_s: float) -> ParkingPass:
        """POST one pass request; raises ParkingError unless a pass came back."""
        assert self._session is not None and self._cfg.url is not None, "start() first"
        body = build_body(req, self._cfg.request_fields)
        try:
            async with self._session.post(
                self._cfg.url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                text = await resp.text()
                if resp.status not in (200, 201):
                    raise ParkingError(f"parking system answered {resp.status}: {text[:200]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ParkingError(f"parking system unreachable: {exc or type(exc).__name__}") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise ParkingError("parking system's reply is not JSON") from None
        return read_reply(data, self._cfg.code_path, self._cfg.valid_until_path, req.valid_until)
