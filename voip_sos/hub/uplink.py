"""Hub side of the backend <-> hub link: one MQTT connection to the operator's broker.

It keeps reconnecting (the home's internet comes and goes), announces `online` (retained) with an
`offline` will, receives commands on its own `cmd/#` and publishes events from a bounded queue, so
an event produced while the link is down is sent when it is back. The session is persistent
(clean_session off, fixed client id) so a revoke sent while the hub was away is delivered on return.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from voip_sos.hub.config import LinkSection
from voip_sos.hub.topics import PREFIX, event_topic, status_topic

__all__ = ["Uplink"]

log = logging.getLogger(__name__)
MAX_QUEUED_EVENTS = 1000
RECONNECT_S = 2.0

CommandHandler = Callable[[str, bytes], Awaitable[None]]


class Uplink:
    """The hub's link to the backend through the operator's broker."""

    def __init__(self, hub_id: str, cfg: LinkSection, on_command: CommandHandler) -> None:
        self.hub_id = hub_id
        self._cfg = cfg
        self._on_command = on_command
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"uplink-{self.hub_id}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def publish_event(self, kind: str, data: dict[str, Any]) -> None:
        """Queue an event for the backend (sent at once when connected, else on reconnection)."""
        body = {"hub": self.hub_id, "at": datetime.now(UTC).isoformat(timespec="milliseconds"), **data}
        item = (event_topic(self.hub_id, kind), json.dumps(body, ensure_ascii=False).encode())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            log.error("backend link down too long, event dropped", extra={"kind": kind})

    async def _run(self) -> None:
        assert self._cfg.broker is not None
        tls = ssl.create_default_context(cafile=self._cfg.ca_file) if self._cfg.ca_file else None
        while True:
            try:
                async with aiomqtt.Client(
                    self._cfg.broker.host,
                    self._cfg.broker.port,
                    username=self._cfg.username or self.hub_id,
                    password=self._cfg.password or None,
                    identifier=f"voip-sos-hub-{self.hub_id}",
                    clean_session=False,
                    keepalive=self._cfg.keepalive_s,
                    tls_context=tls,
                    will=aiomqtt.Will(status_topic(self.hub_id), b"offline", qos=1, retain=True),
                ) as client:
                    await client.subscribe(f"{PREFIX}/{self.hub_id}/cmd/#", qos=1)
                    await client.publish(status_topic(self.hub_id), b"online", qos=1, retain=True)
                    self.connected.set()
                    log.info("backend link up", extra={"hub": self.hub_id})
                    try:
                        async with asyncio.TaskGroup() as tg:
                            tg.create_task(self._send(client))
                            tg.create_task(self._receive(client))
                    except asyncio.CancelledError:
                        # A clean stop: say so (the will only covers a lost connection).
                        with contextlib.suppress(aiomqtt.MqttError):
                            await client.publish(status_topic(self.hub_id), b"offline", qos=1, retain=True)
                        raise
            except* aiomqtt.MqttError as group:
                log.warning(
                    "backend link down", extra={"hub": self.hub_id, "error": str(group.exceptions[0])}
                )
            finally:
                self.connected.clear()
            await asyncio.sleep(RECONNECT_S)

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            topic, payload = await self._queue.get()
            try:
                await client.publish(topic, payload, qos=1)
            except aiomqtt.MqttError:
                # Put it back in front of the line: it goes out first after the reconnection.
                items = [(topic, payload)]
                while not self._queue.empty():
                    items.append(self._queue.get_nowait())
                for item in items[:MAX_QUEUED_EVENTS]:
                    self._queue.put_nowait(item)
                raise

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            command = str(message.topic).rsplit("/", 1)[-1]
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            try:
                await self._on_command(command, payload)
            except Exception:
                log.exception("backend command failed", extra={"hub": self.hub_id, "command": command})
