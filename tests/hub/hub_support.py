"""Helpers for the hub tests: a hub.yaml per test, a running hub, a backend link, polling."""

from __future__ import annotations

import asyncio
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from voip_sos.config import HostPort
from voip_sos.hub.aio import HubClientEndpoint, open_hub_client
from voip_sos.hub.config import HubConfig, load_hub_config
from voip_sos.hub.link import HubLink
from voip_sos.hub.service import HubService
from voip_sos.hub.topics import HubEvent

STB_KEY = bytes(range(32))
BROKER = HostPort("127.0.0.1", 1883)


def use_broker(port: int) -> None:
    """Point every helper and simulator at the broker on `port` (tests/hub/conftest.py sets it)."""
    global BROKER
    BROKER = HostPort("127.0.0.1", port)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def write_config(tmp_path: Path, **sections: dict[str, Any]) -> HubConfig:
    """A hub.yaml with a fresh hub id and state file; `sections` override or add keys."""
    data: dict[str, dict[str, Any]] = {
        "hub": {
            "id": unique("hub"),
            "listen": "127.0.0.1:0",
            "stb_key": STB_KEY.hex(),
            "stb_ip": "127.0.0.1",
            "code_ttl_s": 600,
            "deadline_s": 3,
            "state_file": str(tmp_path / "hub-state.json"),
        },
        "link": {"broker": str(BROKER)},
        "lock": {
            "kind": "zigbee2mqtt",
            "slots": "20-24",
            "attempt_timeout_s": 1,
            "broker": str(BROKER),
            "base_topic": unique("z2m"),
            "device": "front_door",
        },
        "home": {"uid": "U-HOME", "address": "1 Fallback Road", "contact_phone": "+8613900000000"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_hub_config(path, environ={})


@asynccontextmanager
async def running_hub(cfg: HubConfig) -> AsyncIterator[HubService]:
    service = HubService(cfg)
    await service.start()
    try:
        if service.uplink is not None:
            await asyncio.wait_for(service.uplink.connected.wait(), 5)
        yield service
    finally:
        await service.close()
        if cfg.link.broker is not None:
            # Leave no retained status behind on the shared broker.
            async with aiomqtt.Client(BROKER.host, BROKER.port) as client:
                await client.publish(f"voip-sos/hub/{service.hub_id}/status", b"", qos=1, retain=True)


@asynccontextmanager
async def stb_for(service: HubService, give_up_s: float = 20.0) -> AsyncIterator[HubClientEndpoint]:
    assert service.endpoint is not None
    endpoint = await open_hub_client(STB_KEY, service.endpoint.local_addr, give_up_s=give_up_s)
    try:
        yield endpoint
    finally:
        endpoint.close()


@asynccontextmanager
async def backend() -> AsyncIterator[HubLink]:
    async with HubLink(BROKER, client_id=unique("backend")) as link:
        yield link


_SEEN: weakref.WeakKeyDictionary[HubLink, list[HubEvent]] = weakref.WeakKeyDictionary()


async def next_event(link: HubLink, hub_id: str, kind: str, timeout_s: float = 10.0) -> HubEvent:
    """The first not yet taken event of `kind` from `hub_id` (others are kept for later calls)."""
    seen = _SEEN.setdefault(link, [])
    deadline = time.monotonic() + timeout_s
    while True:
        for i, event in enumerate(seen):
            if event.hub_id == hub_id and event.kind == kind:
                return seen.pop(i)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {kind} event from {hub_id} within {timeout_s} s")
        event = await link.next_event(remaining)
        if event.hub_id == hub_id:
            seen.append(event)


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
