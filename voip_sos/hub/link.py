"""Backend side of the backend <-> hub link: send commands to hubs, receive their events over MQTT.

The backend keeps one connection to the operator's broker with its own credentials (the ACL lets
it read every hub's events and write every hub's commands). Use it as

    async with HubLink(HostPort("broker", 1883), username="voip-sos-backend", password=...) as link:
        await link.send_context("hub-0042", IncidentContext(...))      # when an SOS arrives
        result = await link.revoke("hub-0042", timeout_s=30)          # the family's Revoke button
        async for event in link.events(): ...                          # door_code, parking_pass, ...

`revoke` waits for the hub's `revoked` event answering its command id; everything else arrives on
`events()`. A hub's event is authoritative for a code (docs/hub-protocol.md §7).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

import aiomqtt

from voip_sos.config import HostPort
from voip_sos.errors import VoipSosError
from voip_sos.hub.topics import PREFIX, EventKind, HubEvent, IncidentContext, cmd_topic, parse_event
from voip_sos.hub.uplink import MQTT_SOCKET_OPTIONS

__all__ = ["HubLink", "HubLinkError", "RevokeResult"]

log = logging.getLogger(__name__)
MAX_QUEUED_EVENTS = 10_000
RECONNECT_S = 2.0


class HubLinkError(VoipSosError):
    """The broker could not be reached, or a hub did not answer in time."""


@dataclass(frozen=True, slots=True)
class RevokeResult:
    """A hub's answer to a revoke command."""

    hub_id: str
    command_id: str
    cleared: tuple[int, ...]
    """Slots the lock confirmed cleared."""
    failed: tuple[int, ...]
    """Slots the lock did not confirm cleared (still at risk; the hub keeps trying at expiry)."""


class HubLink:
    """One MQTT connection from the backend to every hub."""

    def __init__(
        self,
        broker: HostPort,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        self._broker = broker
        self._username = username
        self._password = password
        # A fixed client id gets a persistent session: events published while the backend was
        # disconnected are delivered when it is back. Without one, each connection starts clean.
        self._client_id = client_id or f"voip-sos-backend-{secrets.token_hex(4)}"
        self._persistent = client_id is not None
        self._tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._client: aiomqtt.Client | None = None
        self._events: asyncio.Queue[HubEvent] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self._revokes: dict[str, asyncio.Future[RevokeResult]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.connects = 0
        """How many times the link has connected (1 + reconnections)."""

    async def _connect(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._username,
            password=self._password,
            identifier=self._client_id,
            clean_session=not self._persistent,
            tls_context=self._tls,
            socket_options=MQTT_SOCKET_OPTIONS,
        )
        try:
            await client.__aenter__()
            await client.subscribe(f"{PREFIX}/+/event/#", qos=1)
            await client.subscribe(f"{PREFIX}/+/status", qos=1)
        except aiomqtt.MqttError as exc:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            raise HubLinkError(f"broker unreachable: {exc}") from None
        self._client = client
        self.connects += 1
        return client

    async def __aenter__(self) -> HubLink:
        client = await self._connect()
        self._reader = asyncio.create_task(self._run(client), name="hub-link-reader")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait({self._reader}, timeout=5.0)
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def _run(self, client: aiomqtt.Client) -> None:
        """Read events; when the broker connection drops, fail waiting revokes and reconnect."""
        while True:
            try:
                await self._read(client)
            except aiomqtt.MqttError as exc:
                log.error("hub link lost, reconnecting", extra={"error": str(exc)})
            self._client = None
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            for fut in self._revokes.values():
                if not fut.done():
                    fut.set_exception(HubLinkError("broker connection lost"))
            while True:
                await asyncio.sleep(RECONNECT_S)
                try:
                    client = await self._connect()
                    break
                except HubLinkError as exc:
                    log.warning("hub link still down", extra={"error": str(exc)})

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            event = parse_event(str(message.topic), payload, asyncio.get_running_loop().time())
            if event is None:
                continue
            if event.kind == EventKind.REVOKED:
                fut = self._revokes.pop(str(event.data.get("command", "")), None)
                if fut is not None and not fut.done():
                    fut.set_result(
                        RevokeResult(
                            event.hub_id,
                            str(event.data.get("command")),
                            tuple(int(s) for s in event.data.get("cleared", [])),
                            tuple(int(s) for s in event.data.get("failed", [])),
                        )
                    )
            try:
                self._events.put_nowait(event)
            except asyncio.QueueFull:
                log.error(
                    "hub events not consumed, dropping", extra={"hub": event.hub_id, "kind": event.kind}
                )

    def _live(self, what: str) -> aiomqtt.Client:
        if self._client is None:
            raise HubLinkError(f"cannot {what}: broker connection down (reconnecting)")
        return self._client

    async def send_context(self, hub_id: str, context: IncidentContext) -> None:
        """Tell the hub about the incident an SOS from its home opened (QoS 1)."""
        client = self._live(f"send context to {hub_id}")
        try:
            await client.publish(cmd_topic(hub_id, "context"), context.to_json(), qos=1)
        except aiomqtt.MqttError as exc:
            raise HubLinkError(f"cannot send context to {hub_id}: {exc}") from None

    async def revoke(self, hub_id: str, timeout_s: float = 30.0) -> RevokeResult:
        """Ask the hub to clear every temporary code; return its confirmed answer.

        Raises HubLinkError when the broker is unreachable or the hub does not answer in time
        (the command stays queued at the broker for the hub's persistent session).
        """
        client = self._live(f"send revoke to {hub_id}")
        command_id = secrets.token_hex(8)
        fut: asyncio.Future[RevokeResult] = asyncio.get_running_loop().create_future()
        self._revokes[command_id] = fut
        try:
            await client.publish(
                cmd_topic(hub_id, "revoke"), json.dumps({"command": command_id}).encode(), qos=1
            )
            async with asyncio.timeout(timeout_s):
                return await fut
        except aiomqtt.MqttError as exc:
            raise HubLinkError(f"cannot send revoke to {hub_id}: {exc}") from None
        except TimeoutError:
            raise HubLinkError(f"hub {hub_id} did not answer the revoke within {timeout_s:g} s") from None
        finally:
            self._revokes.pop(command_id, None)

    async def events(self) -> AsyncIterator[HubEvent]:
        """Every event from every hub, in arrival order (revoke answers included)."""
        while True:
            yield await self._events.get()

    async def next_event(self, timeout_s: float) -> HubEvent:
        """The next event, or TimeoutError."""
        async with asyncio.timeout(timeout_s):
            return await self._events.get()
