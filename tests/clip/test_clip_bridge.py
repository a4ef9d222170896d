"""serve's hub bridge hands the hub its clip upload grant: an SOS from a home with a hub -> the
incident context on that hub's `cmd/context` (a real Mosquitto, read by an MQTT client standing in
for the hub) carries the upload URL and a token the link store resolves to exactly that incident
and hub; a hub's `camera` event is logged, its `clip` event lands on the incident."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime

import aiomqtt
import pytest

from tests.hub.broker import mosquitto
from voip_sos.clips.tokens import CLIP_UPLOAD_KIND, ClipGrants
from voip_sos.config import HostPort
from voip_sos.directory import Address, Contact, Directory, Stb, Subscriber
from voip_sos.hub.link import HubLink
from voip_sos.hub.topics import cmd_topic, event_topic
from voip_sos.incidents.hub_bridge import HubBridge
from voip_sos.incidents.store import IncidentStore, RequestRecord
from voip_sos.web import DbLinkStore


class NoCodes:
    def hub_codes(self, incident_id: int, door_code: str | None, parking_code: str | None) -> bool:
        return False


async def test_context_carries_the_clip_grant_and_hub_clip_events_are_recorded(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    directory = await Directory.open(f"sqlite+aiosqlite:///{tmp_path}/d.db")
    store = IncidentStore(directory.engine)
    links = DbLinkStore(directory.engine)
    sub = Subscriber(uid="U5", name="Ann", language="en", address=Address("5 Elm Road"),
                     contacts=(Contact("Son", "+8613800000005"),), stbs=(Stb("10.0.0.5"),), hub_id="hub-elm")  # fmt: skip
    await directory.add(sub)
    try:
        with mosquitto() as port:
            broker = HostPort("127.0.0.1", port)
            async with (
                aiomqtt.Client("127.0.0.1", port, identifier="the-hub") as hub,
                HubLink(broker, client_id="backend-bridge-test") as link,
            ):
                await hub.subscribe(cmd_topic("hub-elm", "#"), qos=1)
                bridge = HubBridge(link, store, directory)
                bridge.clip_grant = ClipGrants(links, "https://sos.example.net", 3600)
                await bridge.start(NoCodes())
                try:
                    rec = RequestRecord(
                        "sos", os.urandom(16), "10.0.0.5", "U5", datetime.now(UTC), subscriber=sub
                    )
                    [res] = await store.record([rec])
                    bridge.on_recorded(rec, res)
                    async with asyncio.timeout(10):
                        message = await anext(hub.messages)
                    ctx = json.loads(message.payload)  # type: ignore[arg-type]
                    incident = res.incident_id
                    assert ctx["incident"] == str(incident)
                    assert ctx["upload_url"] == f"https://sos.example.net/hub/v1/clips/{incident}"
                    grant = await links.resolve(ctx["upload_token"], datetime.now(UTC))
                    assert grant is not None and grant.kind == CLIP_UPLOAD_KIND
                    assert (grant.incident_id, grant.target) == (str(incident), "hub-elm")

                    # What the hub reports back: camera health (logged), a clip's outcome (recorded).
                    caplog.set_level(logging.INFO, logger="voip_sos.clips.health")
                    camera = {"camera": "hall", "state": "reconnecting", "error": "ffmpeg exited with 1",
                              "gap": None, "restarts": 1, "buffered_s": 12.0}  # fmt: skip
                    await hub.publish(event_topic("hub-elm", "camera"), json.dumps(camera), qos=1)
                    clip = {"hub": "hub-elm", "incident": str(incident), "camera": "hall", "part": "recent",
                            "state": "failed", "error": "upload deadline passed", "bytes": 1000}  # fmt: skip
                    await hub.publish(event_topic("hub-elm", "clip"), json.dumps(clip), qos=1)
                    for _ in range(200):  # up to 10 s
                        if "hub_clip" in [e.kind for e in await store.events(incident)]:
                            break
                        await asyncio.sleep(0.05)
                finally:
                    await bridge.close()
        [recorded] = [e for e in await store.events(incident) if e.kind == "hub_clip"]
        assert recorded.detail["state"] == "failed" and recorded.detail["camera"] == "hall"
        [line] = [r for r in caplog.records if r.name == "voip_sos.clips.health"]
        assert line.levelno == logging.WARNING and "reconnecting" in line.getMessage()
    finally:
        await store.aclose()
        await directory.close()
