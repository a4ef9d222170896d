"""Simulated peers of the home hub, each a real network peer keeping its own state.

- Z2mLockSim: a Zigbee lock as Zigbee2MQTT presents it, over the real Mosquitto broker: reads
  `<base>/<device>/set` {"pin_code": {...}}, keeps user slots, publishes the state with `users`.
- HaLockSim: Home Assistant's REST API (/api/services/zwave_js/set_lock_usercode and
  clear_lock_usercode) over real HTTP, checking the Bearer token.
- ParkingSim: a residential parking system's pass endpoint over real HTTP.
Each can be switched "offline" to test retries and failure reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from aiohttp import web

from tests.hub import hub_support
from voip_sos.hub.uplink import MQTT_SOCKET_OPTIONS


@dataclass
class Slot:
    code: str
    permanent: bool = False


class Z2mLockSim:
    """Speaks Zigbee2MQTT's pin_code interface for one lock on the real broker."""

    def __init__(
        self, base_topic: str, device: str, *, expose_pin: bool = True, broker: tuple[str, int] | None = None
    ) -> None:
        self.base = base_topic
        self.device = device
        self.expose_pin = expose_pin
        self.broker = broker or (hub_support.BROKER.host, hub_support.BROKER.port)
        self.users: dict[int, Slot] = {}
        self.online = True
        self.commands: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Z2mLockSim:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client(
            *self.broker, identifier=f"z2m-sim-{secrets.token_hex(4)}", socket_options=MQTT_SOCKET_OPTIONS
        ) as client:
            await client.subscribe(f"{self.base}/{self.device}/set", qos=1)
            self._ready.set()
            async for message in client.messages:
                if not self.online:
                    continue  # out of radio range: the command is lost, no state follows
                assert isinstance(message.payload, bytes | bytearray)
                cmd = json.loads(message.payload)
                self.commands.append(cmd)
                pin = cmd.get("pin_code")
                if not isinstance(pin, dict):
                    continue
                user = int(pin["user"])
                if user in self.users and self.users[user].permanent:
                    pass  # the simulator would refuse to overwrite; the hub must never ask
                if pin.get("pin_code") is None:
                    self.users.pop(user, None)
                else:
                    self.users[user] = Slot(str(pin["pin_code"]))
                await client.publish(f"{self.base}/{self.device}", json.dumps(self.state(user)), qos=1)

    def state(self, user: int) -> dict[str, Any]:
        slot = self.users.get(user)
        entry: dict[str, Any] = {"status": "enabled" if slot else "available"}
        if slot and self.expose_pin:
            entry["pin_code"] = slot.code
        return {"state": "LOCK", "lock_state": "locked", "users": {str(user): entry}}

    def temporary(self) -> dict[int, str]:
        return {u: s.code for u, s in self.users.items() if not s.permanent}


@dataclass
class HaLockSim:
    """Home Assistant's REST service calls for one Z-Wave lock entity."""

    token: str
    entity: str = "lock.front_door"
    users: dict[int, Slot] = field(default_factory=dict)
    online: bool = True
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> HaLockSim:
        app = web.Application()
        app.router.add_post("/api/services/zwave_js/{service}", self._service)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _service(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="401: Unauthorized")
        data = await request.json()
        service = request.match_info["service"]
        self.calls.append((service, data))
        if data.get("entity_id") != self.entity:
            return web.json_response({"message": "entity not found"}, status=400)
        if not self.online:
            # What zwave_js reports for a dead node: the service call fails.
            return web.Response(status=500, text="500 Internal Server Error")
        slot = int(data["code_slot"])
        if service == "set_lock_usercode":
            self.users[slot] = Slot(str(data["usercode"]))
        elif service == "clear_lock_usercode":
            self.users.pop(slot, None)
        else:
            return web.json_response({"message": f"unknown service {service}"}, status=400)
        return web.json_response([])

    def temporary(self) -> dict[int, str]:
        return {u: s.code for u, s in self.users.items() if not s.permanent}


@dataclass
class ParkingSim:
    """A parking system granting passes; `nested` answers {"pass": {"code", "valid_until"}}."""

    token: str = "park-token"
    online: bool = True
    nested: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    passes: dict[str, str] = field(default_factory=dict)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> ParkingSim:
        app = web.Application()
        app.router.add_post("/passes", self._passes)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/passes"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _passes(self, request: web.Request) -> web.Response:
        if not self.online:
            return web.Response(status=503, text="maintenance")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401)
        body = await request.json()
        self.requests.append(body)
        code = f"P{secrets.randbelow(10**6):06d}"
        self.passes[code] = json.dumps(body)
        until = body["valid_until"] if not self.nested else body["validity"]["until"]
        if self.nested:
            return web.json_response({"pass": {"code": code, "valid_until": until}}, status=201)
        return web.json_response({"pass_code": code, "valid_until": until})
