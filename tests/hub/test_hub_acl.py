"""The broker ACL of docs/hub-protocol.md §8 on a real Mosquitto: a hub reads and writes only its own
topics; the backend reaches every hub. A private Mosquitto on a free port, stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.hub.broker import mosquitto
from voip_sos.config import HostPort
from voip_sos.hub.link import HubLink, HubLinkError

DOC = Path(__file__).resolve().parents[2] / "docs" / "hub-protocol.md"
USERS = {"voip-sos-backend": "backend-pw", "hub-a": "a-pw", "hub-b": "b-pw"}


def documented_acl() -> str:
    """The ACL exactly as the document gives it (the block after the <!-- mosquitto-acl --> marker)."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- mosquitto-acl -->\s*```\n(.*?)```", text, re.S)
    assert m, "docs/hub-protocol.md has no mosquitto-acl block"
    return m.group(1)


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[int]:
    with mosquitto(users=USERS, acl=documented_acl(), folder=tmp_path) as port:
        yield port


def client(port: int, user: str, password: str | None = None) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", port, username=user, password=password or USERS[user], identifier=f"t-{user}"
    )


async def collect(c: aiomqtt.Client, seconds: float) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                got.append((str(m.topic), m.payload))
    return got


async def test_a_hub_cannot_read_or_write_another_hubs_topics(acl_broker: int) -> None:
    port = acl_broker
    async with client(port, "hub-a") as a, client(port, "hub-b") as b, client(port, "voip-sos-backend") as be:
        # hub-a tries to listen to everything, and to hub-b's commands in particular.
        await a.subscribe("voip-sos/hub/#", qos=1)
        await a.subscribe("voip-sos/hub/hub-b/cmd/#", qos=1)
        await b.subscribe("voip-sos/hub/hub-b/cmd/#", qos=1)
        await be.subscribe("voip-sos/hub/+/event/#", qos=1)
        # The backend commands hub-b; hub-b reports; hub-a forges a command to hub-b and an event as hub-b.
        await be.publish("voip-sos/hub/hub-b/cmd/revoke", b'{"command": "x1"}', qos=1)
        await b.publish("voip-sos/hub/hub-b/event/door_code", b'{"code": "135790"}', qos=1)
        await a.publish("voip-sos/hub/hub-b/cmd/revoke", b'{"command": "forged"}', qos=1)
        await a.publish("voip-sos/hub/hub-b/event/revoked", b'{"forged": true}', qos=1)
        # hub-a may write its own events and read its own commands.
        await a.publish("voip-sos/hub/hub-a/event/expired", b'{"slot": 20}', qos=1)
        await be.publish("voip-sos/hub/hub-a/cmd/context", b'{"incident": "1"}', qos=1)
        got_a, got_b, got_be = await asyncio.gather(collect(a, 1.0), collect(b, 1.0), collect(be, 1.0))
    # hub-a saw only its own command, nothing of hub-b's.
    assert got_a == [("voip-sos/hub/hub-a/cmd/context", b'{"incident": "1"}')]
    # hub-b got the backend's command and not hub-a's forgery.
    assert got_b == [("voip-sos/hub/hub-b/cmd/revoke", b'{"command": "x1"}')]
    # The backend got both hubs' genuine events and no forged one.
    assert sorted(got_be) == [
        ("voip-sos/hub/hub-a/event/expired", b'{"slot": 20}'),
        ("voip-sos/hub/hub-b/event/door_code", b'{"code": "135790"}'),
    ]


async def test_wrong_password_is_refused(acl_broker: int) -> None:
    with pytest.raises(HubLinkError):
        async with HubLink(HostPort("127.0.0.1", acl_broker), username="voip-sos-backend", password="nope"):
            pass
