"""The home hub wired into the backend, end to end over real parts: `voip-sos serve` (its hub link on
the test Mosquitto), Kamailio relaying SMS to a SIPp SMS centre, SIPp callees that keep ringing, the
hub in-process with its Zigbee2MQTT lock simulator and parking simulator, the real STB CLI pressing
with `--hub`, and the family page in headless Chromium."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.conftest import CLI
from tests.hub import hub_support
from tests.hub.hub_sims import ParkingSim, Slot, Z2mLockSim
from tests.hub.hub_support import STB_KEY, running_hub, write_config
from tests.incidents.harness import (
    PHONE_PASSWORD,
    SIP_PASSWORD,
    Backend,
    incident_of,
    register_sipp,
    secret_hex,
    stb,
    stb_ip,
    subscriber,
    wait_for,
)
from tests.peers import Kamailio, Sipp, free_port, wait_udp_listening
from voip_sos.hub.config import HubConfig

CENTRE, SON = "120", "2001"
OWNER_SLOTS = {1: Slot("112233", permanent=True), 2: Slot("445566", permanent=True)}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Our own folder (pytest's numbered ones are pruned by other runs), kept when the test fails."""
    path = Path(tempfile.mkdtemp(prefix="voip-sos-hub-e2e-"))
    ok = False
    try:
        yield path
        ok = True
    finally:
        if ok:
            shutil.rmtree(path, ignore_errors=True)
        else:
            print(f"kept for inspection: {path}")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


class Pbx:
    """Kamailio relaying MESSAGE to a SIPp SMS centre; the centre and the son are SIPp callees that
    ring without answering (the incident stays open while the codes arrive)."""

    def __init__(self, st: ExitStack) -> None:
        self.smsc = st.enter_context(Sipp("uas_smsc", free_port(both=False), calls=1000, timeout_s=300))
        self.port = free_port()
        users = {"voip-sos": SIP_PASSWORD, CENTRE: PHONE_PASSWORD, SON: PHONE_PASSWORD}
        self.kamailio = st.enter_context(Kamailio(self.port, users, smsc=("127.0.0.1", self.smsc.port)))
        self.addr = ("127.0.0.1", self.port)
        self.callees = [
            st.enter_context(Sipp("uas_ring_cancel", free_port(both=False), calls=8, timeout_s=300))
            for _ in (CENTRE, SON)
        ]

    async def start(self) -> None:
        await wait_udp_listening(self.port, peer=self.kamailio)
        for number, callee in zip((CENTRE, SON), self.callees, strict=True):
            await asyncio.to_thread(register_sipp, self.port, number, callee.port)

    def texts(self) -> list[str]:
        """Bodies of the MESSAGEs the SMS centre received, in order."""
        out = []
        for block in self.smsc.messages().split("----------------------------------------------"):
            if "MESSAGE sip:" in block and "received" in block:
                _, _, body = block.replace("\r\n", "\n").partition("\n\n")
                out.append(body.strip())
        return out


async def serve_with_hub(workdir: Path, pbx: Pbx, hub: HubConfig) -> Backend:
    backend = Backend(
        workdir / "backend",
        pbx.addr,
        # Kamailio ends an unanswered INVITE after 30 s (fr_inv_timer, 408): three redials keep
        # the incident open for the whole test (the callees ring and never answer).
        {"center": CENTRE, "redial": 3, "redial_pause_s": 0.5, "ring_timeout_s": 60, "max_call_s": 60,
         "pidf_lo": False, "codes_settle_s": 1.0},
    )  # fmt: skip
    with backend.config.open("a", encoding="utf-8") as f:
        f.write(f"hub_link:\n  broker: {hub_support.BROKER}\n  revoke_timeout_s: 15\n")
    sub = subscriber("U8", "Ann Smith", "12 Elm Street, Springfield", 0, [("Son", SON)])
    await backend.provision([dataclasses.replace(sub, hub_id=hub.hub.id)])
    await backend.start()
    return backend


async def press(backend: Backend, hub_port: int, *extra: str) -> dict[str, Any]:
    """`voip-sos stb press --hub` as the STB of subscriber U8: SOS and hub instruction at once."""
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "stb", "press", "--backend", backend.sos, "--source-ip", stb_ip(0),
        "--secret", secret_hex(0), "--hub", f"127.0.0.1:{hub_port}", "--hub-key", STB_KEY.hex(),
        "--hub-wait", "20", "--json", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode() + err.decode()
    return dict(json.loads(out.decode().splitlines()[0]))


async def _count(events: Any, at_least: int) -> bool:
    return len(await events) >= at_least


def hub_config(tmp: Path, **sections: dict[str, Any]) -> HubConfig:
    # The STB of subscriber U8 sends from its own loopback address (the hub checks it).
    hub = {"stb_ip": stb_ip(0), "deadline_s": 3} | sections.pop("hub", {})
    return write_config(tmp, hub=hub, **sections)


async def test_press_codes_reach_the_incident_sms_once_and_family_revokes(
    workdir: Path, browser: Browser
) -> None:
    async with ParkingSim() as parking:
        cfg = hub_config(workdir, parking={"url": parking.url, "token": parking.token})
        with ExitStack() as st:
            pbx = Pbx(st)
            await pbx.start()
            async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock, running_hub(cfg) as hub:
                lock.users.update(OWNER_SLOTS)
                backend = await serve_with_hub(workdir, pbx, cfg)
                st.callback(backend.kill9)
                assert hub.endpoint is not None
                out = await press(backend, hub.endpoint.local_addr[1])

                # The STB got both codes from the hub and forwarded them as UPDATEs.
                door, parking_code = out["hub"]["door_code"], out["hub"]["parking_code"]
                assert out["result"] == "receipt" and out["hub"]["final"], out
                assert lock.temporary() == {20: door} and parking_code in parking.passes
                assert out["hub"]["updates"] and all(u["result"] == "receipt" for u in out["hub"]["updates"])
                assert out["hub"]["updates"][-1] == {"door_code": door, "parking_code": parking_code,
                                                     "result": "receipt"}  # fmt: skip
                incident = await incident_of(backend, "U8")
                # The backend pushed the incident's context to the hub: the pass was asked with it.
                req = parking.requests[-1]
                assert (req["uid"], req["contact_phone"]) == ("U8", SON), req
                assert req["address"].startswith("12 Elm Street")

                # The hub's own events are recorded on the incident (authoritative), next to the STB's.
                async def hub_kinds() -> list[str] | None:
                    kinds = [e["kind"] for e in await backend.events(incident)]
                    want = {"hub_door_code", "hub_parking_pass", "update_received"}
                    return kinds if want <= set(kinds) else None

                await wait_for(hub_kinds, 15, "hub codes recorded on the incident")
                hub_door = (await backend.events(incident, "hub_door_code"))[0]["detail"]
                assert hub_door["code"] == door and hub_door["slot"] == 20 and hub_door["confirmed"]
                # The hub echoes the SOS's request id: that places the code, even when the code was
                # confirmed before the incident's context reached the hub (its `incident` is then null).
                assert hub_door["request"] == out["request_id"] and hub_door["incident"] in (
                    None,
                    str(incident),
                )

                # The follow-up SMS: once per told party (centre and son), both codes in one text,
                # although the hub and the STB each reported each code.
                def codes_texts() -> list[str]:
                    return [t for t in pbx.texts() if door in t]

                await wait_for(lambda: len(codes_texts()) >= 2, 30, "the codes SMS")
                await asyncio.sleep(3.0)  # anything more would have gone out by now (settle 1 s)
                texts = codes_texts()
                assert len(texts) == 2 and all(parking_code in t for t in texts), texts
                # A later UPDATE from the STB repeating the hub's codes, or with a door code that
                # differs from the hub's (authoritative), texts nobody again.
                for extra in (
                    ["--door-code", door, "--parking-code", parking_code],
                    ["--door-code", "000000"],
                ):
                    answer = await stb(backend, 0, "update", *extra)
                    assert answer["result"] == "receipt" and answer["incident_id"] == incident
                await wait_for(
                    lambda: _count(backend.events(incident, "update_received"), 3), 10, "the UPDATEs recorded"
                )
                await asyncio.sleep(2.5)
                assert len(codes_texts()) == 2 and not [t for t in pbx.texts() if "000000" in t]
                sent = await backend.events(incident, "sms_result")
                assert sorted(e["detail"]["number"] for e in sent if e["detail"]["kind"] == "codes") == [
                    CENTRE, SON
                ]  # fmt: skip

                # The son's emergency SMS carries his own family link; the centre's carries none.
                emergency = {e["detail"]["number"]: e["detail"]["text"] for e in sent
                             if e["detail"]["kind"] == "emergency"}  # fmt: skip
                assert "/f/" not in emergency[CENTRE]
                m = re.search(r"Status and door codes: (http://127\.0\.0\.1:\d+/f/[A-Za-z0-9_\-]{22})$",
                              emergency[SON])  # fmt: skip
                assert m, emergency[SON]
                assert any(m.group(1) in t for t in pbx.texts())  # as the SMS centre received it

                # The family page shows the codes; Revoke goes backend -> broker -> hub -> lock.
                ctx = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
                page = await ctx.new_page()
                page.set_default_timeout(20_000)
                await page.goto(m.group(1))
                await expect(page.locator("#door-code")).to_have_text(door)
                await expect(page.locator("#parking-code")).to_have_text(parking_code)
                await page.locator("#revoke").click()
                await page.locator("#confirm-yes").click()
                await expect(page.locator("#revoke-result")).to_contain_text("the lock confirmed it")
                await expect(page.locator("#revoke-result")).to_contain_text("20")
                await expect(page.locator("#door-code")).to_have_class("code revoked")
                await ctx.close()
                # Only the temporary code is gone; the owner's codes were never addressed.
                assert lock.temporary() == {} and 20 not in lock.users
                assert lock.users[1].code == "112233" and lock.users[2].code == "445566"
                assert {c["pin_code"]["user"] for c in lock.commands} == {20}
                result = (await backend.events(incident, "revoke_result"))[-1]["detail"]
                assert result["confirmed"] and result["cleared_slots"] == [20] and result["error"] is None
                await wait_for(
                    lambda: backend.events(incident, "hub_revoked"), 10, "the hub's revoked event recorded"
                )
                assert "incident context sent to the home hub" in backend.log_text()

                # Pressed again (it joins the incident; the hub issues a fresh code), then a false
                # alarm at the TV box: CANCEL to the backend and REVOKE to the hub at once.
                again = await press(backend, hub.endpoint.local_addr[1])
                assert again["incident_id"] == incident and again["hub"]["door_code"] not in (None, door)
                assert lock.temporary() == {20: again["hub"]["door_code"]}
                hub_args = ["--hub", f"127.0.0.1:{hub.endpoint.local_addr[1]}", "--hub-key", STB_KEY.hex()]
                cancel = await stb(backend, 0, "cancel", *hub_args)
                assert cancel["result"] == "receipt" and cancel["incident_id"] == incident
                assert cancel["hub"] == {"hub": hub_args[1], "answered": True, "cleared": 1, "failed": 0}
                assert lock.temporary() == {}
                assert backend.stop() == 0


async def test_lock_offline_is_retried_then_reported_on_the_incident(workdir: Path) -> None:
    cfg = hub_config(workdir, hub={"deadline_s": 2})
    with ExitStack() as st:
        pbx = Pbx(st)
        await pbx.start()
        async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock, running_hub(cfg) as hub:
            lock.online = False
            backend = await serve_with_hub(workdir, pbx, cfg)
            st.callback(backend.kill9)
            assert hub.endpoint is not None
            out = await press(backend, hub.endpoint.local_addr[1])
            assert out["result"] == "receipt"
            assert out["hub"]["door_state"] == "failed" and out["hub"]["door_code"] is None
            assert out["hub"]["parking_state"] == "not_configured" and out["hub"]["updates"] == []
            incident = out["incident_id"]
            failed = await wait_for(
                lambda: backend.events(incident, "hub_failed"), 15, "the hub's failure on the incident"
            )
            detail = failed[0]["detail"]
            assert detail["what"] == "door_code" and detail["attempts"] >= 2, detail
            assert detail["incident"] == str(incident) and detail["request"] == out["request_id"]
            assert lock.temporary() == {}
            assert re.search(rf"home hub reports a failure.*incident={incident}", backend.log_text())
            # No code, no follow-up SMS.
            assert not await backend.events(incident, "hub_door_code")
            assert all(
                e["detail"]["kind"] == "emergency" for e in await backend.events(incident, "sms_sending")
            )
            assert backend.stop() == 0
