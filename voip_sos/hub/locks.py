"""Smart lock adapters: one interface, two ways to reach the lock (Zigbee2MQTT, Home Assistant).

A call returns only once the lock (or the stack in front of it) confirmed the change; otherwise it
raises LockError. Retrying, deadlines and bookkeeping are the hub service's business, not this.

Zigbee2MQTT (https://www.zigbee2mqtt.io/devices/, any lock exposing `pin_code`): publish to
`<base>/<device>/set` the payload {"pin_code": {"user": N, "user_type": "unrestricted",
"user_enabled": true, "pin_code": "123456"}}; to clear, the same without "pin_code". Z2M answers
with the lock's state on `<base>/<device>`, whose `users` object carries {"N": {"status":
"enabled" | "disabled" | "available", "pin_code": "..."}} (pin_code only with the device option
`expose_pin`). Only a state message that arrives *after* our command counts, so a retained old
state can never confirm a new code.

Home Assistant (REST, long-lived token): POST /api/services/zwave_js/set_lock_usercode with
{"entity_id", "code_slot", "usercode"}, and .../clear_lock_usercode with {"entity_id",
"code_slot"}. The zwave_js integration returns only after Z-Wave JS sent the User Code Set to the
node; a dead node or a refused command makes the call fail (HTTP 4xx/5xx), which we report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import aiomqtt

from voip_sos.errors import VoipSosError
from voip_sos.hub.config import LockSection
from voip_sos.hub.uplink import MQTT_SOCKET_OPTIONS

__all__ = ["HomeAssistantLock", "Lock", "LockError", "NoLock", "Zigbee2MqttLock", "make_lock"]

log = logging.getLogger(__name__)


class LockError(VoipSosError):
    """The lock did not confirm a change (offline, refused, timed out)."""


class Lock(Protocol):
    """What the hub needs from a lock."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def set_code(self, slot: int, code: str, timeout_s: float) -> None:
        """Store `code` in `slot`; return once confirmed, else raise LockError."""

    async def clear_code(self, slot: int, timeout_s: float) -> None:
        """Clear `slot`; return once confirmed, else raise LockError."""


class NoLock:
    """`lock.kind: none` -- every call fails, so the door part is reported as not configured."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def set_code(self, slot: int, code: str, timeout_s: float) -> None:
        raise LockError("no lock configured")

    async def clear_code(self, slot: int, timeout_s: float) -> None:
        raise LockError("no lock configured")


_Waiter = tuple[Callable[[dict[str, Any]], bool], "asyncio.Future[None]"]


class Zigbee2MqttLock:
    """A Zigbee lock behind Zigbee2MQTT on the home's MQTT broker."""

    def __init__(self, cfg: LockSection, *, client_id: str | None = None) -> None:
        self._cfg = cfg
        self._set_topic = f"{cfg.base_topic}/{cfg.device}/set"
        self._state_topic = f"{cfg.base_topic}/{cfg.device}"
        self._client_id = client_id
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: list[_Waiter] = []
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="z2m-lock")
        # Don't block the hub's start on the home broker: a command waits for it within its deadline.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._connected.wait()

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def _run(self) -> None:
        """Keep a connection to the home broker, reconnecting after a pause when it drops."""
        while True:
            try:
                async with aiomqtt.Client(
                    self._cfg.broker.host,
                    self._cfg.broker.port,
                    username=self._cfg.username,
                    password=self._cfg.password or None,
                    identifier=self._client_id,
                    socket_options=MQTT_SOCKET_OPTIONS,
                ) as client:
                    await client.subscribe(self._state_topic, qos=1)
                    self._client = client
                    self._connected.set()
                    async for message in client.messages:
                        self._on_state(message.payload)
            except aiomqtt.MqttError as exc:
                log.warning("home broker link down", extra={"error": str(exc)})
            finally:
                self._client = None
                self._connected.clear()
            await asyncio.sleep(1.0)

    def _on_state(self, payload: Any) -> None:
        try:
            state = json.loads(payload)
        except (TypeError, ValueError):
            return
        if not isinstance(state, dict):
            return
        for waiter in list(self._waiters):
            predicate, fut = waiter
            if not fut.done() and predicate(state):
                fut.set_result(None)

    async def _command(
        self,
        payload: dict[str, Any],
        confirmed: Callable[[dict[str, Any]], bool],
        timeout_s: float,
        what: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError:
            raise LockError(f"{what}: home broker unreachable") from None
        client = self._client
        if client is None:
            raise LockError(f"{what}: home broker unreachable")
        fut: asyncio.Future[None] = loop.create_future()
        waiter: _Waiter = (confirmed, fut)
        self._waiters.append(waiter)
        try:
            await client.publish(self._set_topic, json.dumps(payload), qos=1)
            async with asyncio.timeout_at(deadline):
                await fut
        except TimeoutError:
            raise LockError(f"{what}: lock did not confirm within {timeout_s:g} s") from None
        except aiomqtt.MqttError as exc:
            raise LockError(f"{what}: {exc}") from None
        finally:
            self._waiters.remove(waiter)

    async def set_code(self, slot: int, code: str, timeout_s: float) -> None:
        def confirmed(state: dict[str, Any]) -> bool:
            user = _user(state, slot)
            return user.get("status") == "enabled" and user.get("pin_code", code) in (code, int(code))

        payload = {
            "pin_code": {"user": slot, "user_type": "unrestricted", "user_enabled": True, "pin_code": code}
        }
        await self._command(payload, confirmed, timeout_s, f"set slot {slot}")

    async def clear_code(self, slot: int, timeout_s: float) -> None:
        def confirmed(state: dict[str, Any]) -> bool:
            return _user(state, slot).get("status") == "available"

        await self._command({"pin_code": {"user": slot}}, confirmed, timeout_s, f"clear slot {slot}")


def _user(state: dict[str, Any], slot: int) -> dict[str, Any]:
    users = state.get("users")
    user = users.get(str(slot)) if isinstance(users, dict) else None
    return user if isinstance(user, dict) else {}


class HomeAssistantLock:
    """A Z-Wave lock behind Home Assistant's zwave_js integration, over the REST API."""

    def __init__(self, cfg: LockSection) -> None:
        assert cfg.url is not None
        self._cfg = cfg
        self._base = cfg.url
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self._cfg.token}", "Content-Type": "application/json"}
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, service: str, data: dict[str, Any], timeout_s: float, what: str) -> None:
        assert self._session is not None, "start() first"
        url = f"{self._base}/api/services/zwave_js/{service}"
        try:
            async with self._session.post(
                url, json=data, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                body = await resp.text()
                if resp.status != 200:
                    raise LockError(f"{what}: Home Assistant answered {resp.status}: {body[:200]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LockError(f"{what}: Home Assistant unreachable: {exc or type(exc).__name__}") from None

    async def set_code(self, slot: int, code: str, timeout_s: float) -> None:
        data = {"entity_id": self._cfg.entity, "code_slot": slot, "usercode": code}
        await self._call("set_lock_usercode", data, timeout_s, f"set slot {slot}")

    async def clear_code(self, slot: int, timeout_s: float) -> None:
        data = {"entity_id": self._cfg.entity, "code_slot": slot}
        await self._call("clear_lock_usercode", data, timeout_s, f"clear slot {slot}")


def make_lock(cfg: LockSection, hub_id: str) -> Lock:
    """The adapter `lock.kind` names."""
    if cfg.kind == "zigbee2mqtt":
        return Zigbee2MqttLock(cfg, client_id=f"voip-sos-hub-{hub_id}-lock")
    if cfg.kind == "homeassistant":
        return HomeAssistantLock(cfg)
    return NoLock()
