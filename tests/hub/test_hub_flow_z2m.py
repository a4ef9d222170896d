"""Whole hub flows over real parts: the Mosquitto broker, a Zigbee2MQTT lock simulator on it, a
parking system over HTTP, the STB side over UDP, and the backend's link client."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.hub.broker import free_port, mosquitto
from tests.hub.hub_sims import ParkingSim, Slot, Z2mLockSim
from tests.hub.hub_support import backend, next_event, running_hub, stb_for, unique, wait_for, write_config
from voip_sos.config import HostPort
from voip_sos.hub.link import HubLink
from voip_sos.hub.service import HubService
from voip_sos.hub.topics import IncidentContext
from voip_sos.hub.wire import PartState

OWNER_SLOTS = {1: Slot("112233", permanent=True), 2: Slot("445566", permanent=True)}


async def test_press_gets_confirmed_door_code_and_parking_pass(tmp_path: Path) -> None:
    async with ParkingSim() as parking:
        cfg = write_config(tmp_path, parking={"url": parking.url, "token": parking.token})
        async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock, backend() as link:
            lock.users.update(OWNER_SLOTS)
            async with running_hub(cfg) as hub, stb_for(hub) as stb:
                assert hub.hub_id == cfg.hub.id
                ctx = IncidentContext("inc-77", "U-77", "7 Real Street, Room 501", "+8613800000077")
                await link.send_context(hub.hub_id, ctx)
                updates = []
                t0 = time.time()
                codes = await stb.request_codes(on_update=updates.append)
                assert codes is not None and codes.final
                assert codes.door_state is PartState.ISSUED and codes.parking_state is PartState.ISSUED
                # The code the STB got is the one the lock holds, in the first reserved slot.
                assert lock.temporary() == {20: codes.door_code}
                assert codes.door_code is not None and len(codes.door_code) == 6 and codes.door_code.isdigit()
                assert codes.door_valid_until_ms is not None
                assert abs(codes.door_valid_until_ms / 1000 - (t0 + 600)) < 5
                assert codes.parking_code in parking.passes
                # Parking asked with the backend's context, not the fallback.
                req = parking.requests[-1]
                assert (req["uid"], req["address"], req["contact_phone"]) == (
                    "U-77",
                    ctx.address,
                    "+8613800000077",
                )
                assert req["reference"] == req["reference"].lower() and len(req["reference"]) == 32
                # Each part was forwarded as soon as it settled; the last one is FINAL.
                assert updates[-1] == codes and all(not u.final for u in updates[:-1])
                door = await next_event(link, hub.hub_id, "door_code")
                assert door.data["code"] == codes.door_code and door.data["slot"] == 20
                assert door.data["confirmed"] is True and door.incident == "inc-77"
                park = await next_event(link, hub.hub_id, "parking_pass")
                assert park.data["code"] == codes.parking_code and park.incident == "inc-77"
                # Owner codes untouched; the hub only ever addressed reserved slots.
                assert lock.users[1].code == "112233" and lock.users[2].code == "445566"
                assert {c["pin_code"]["user"] for c in lock.commands} <= set(cfg.lock.slots)


async def test_second_press_gets_the_same_code(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, link={"broker": None})
    async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock, running_hub(cfg) as hub:
        async with stb_for(hub) as stb:
            first = await stb.request_codes()
            second = await stb.request_codes()
        assert first is not None and second is not None
        assert first.door_code == second.door_code and lock.temporary() == {20: first.door_code}
        # No parking configured, no backend link: the part says so instead of failing.
        assert first.parking_state is PartState.NOT_CONFIGURED


async def test_expiry_clears_the_code(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, hub={"code_ttl_s": 1.0})
    async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock, backend() as link:
        lock.users.update(OWNER_SLOTS)
        async with running_hub(cfg) as hub, stb_for(hub) as stb:
            codes = await stb.request_codes()
            assert codes is not None and lock.temporary() == {20: codes.door_code}
            expired = await next_event(link, hub.hub_id, "expired", timeout_s=5)
            assert expired.data["slot"] == 20
            assert lock.temporary() == {} and set(lock.users) == {1, 2}
            assert hub.slots.codes() == []


async def test_revoke_from_backend_clears_only_temporary_codes(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, hub={"code_ttl_s": 4.0})
    async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock, backend() as link:
        lock.users.update(OWNER_SLOTS)
        async with running_hub(cfg) as hub, stb_for(hub) as stb:
            first = await stb.request_codes()
            # Past half its validity a code is no longer handed out again: the next press gets a new slot.
            await asyncio.sleep(2.1)
            second = await stb.request_codes()
            assert first is not None and second is not None and first.door_code != second.door_code
            assert lock.temporary() == {20: first.door_code, 21: second.door_code}
            result = await link.revoke(hub.hub_id, timeout_s=10)
            assert result.cleared == (20, 21) and result.failed == ()
            assert lock.temporary() == {}
            assert {u: s.code for u, s in lock.users.items()} == {1: "112233", 2: "445566"}
            assert hub.slots.codes() == []
            # A revoke with nothing to clear is answered too.
            again = await link.revoke(hub.hub_id, timeout_s=10)
            assert again.cleared == () and again.failed == ()


async def test_revoke_from_the_stb(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, link={"broker": None})
    async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock, running_hub(cfg) as hub:
        lock.users.update(OWNER_SLOTS)
        async with stb_for(hub) as stb:
            codes = await stb.request_codes()
            assert codes is not None and lock.temporary() == {20: codes.door_code}
            revoked = await stb.revoke()
        assert revoked is not None and (revoked.cleared, revoked.failed) == (1, 0)
        assert lock.temporary() == {} and set(lock.users) == {1, 2}


async def test_lock_offline_is_retried_then_reported_and_cleared_later(tmp_path: Path) -> None:
    async with ParkingSim() as parking:
        cfg = write_config(
            tmp_path,
            hub={"deadline_s": 1.5},
            lock={"attempt_timeout_s": 0.3},
            parking={"url": parking.url, "token": parking.token},
        )
        async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock, backend() as link:
            lock.online = False
            async with running_hub(cfg) as hub, stb_for(hub) as stb:
                t0 = time.monotonic()
                codes = await stb.request_codes()
                elapsed = time.monotonic() - t0
                assert codes is not None and codes.final
                assert codes.door_state is PartState.FAILED and codes.door_code is None
                # The parking pass did not wait for the lock, and the failure took the deadline.
                assert codes.parking_state is PartState.ISSUED
                assert 1.4 < elapsed < 4.0
                failed = await next_event(link, hub.hub_id, "failed")
                assert failed.data["what"] == "door_code" and failed.data["attempts"] >= 3
                assert "did not confirm" in failed.data["reason"]
                # The lock comes back: the code that may have landed late is cleared, not left open.
                lock.online = True
                await wait_for(lambda: hub.slots.codes() == [], timeout_s=6, what="failed slot cleared")
                assert any(c["pin_code"] == {"user": 20} for c in lock.commands)
                assert lock.temporary() == {}


async def test_parking_down_is_retried_then_reported_without_holding_the_door_code(tmp_path: Path) -> None:
    async with ParkingSim(online=False) as parking:
        cfg = write_config(
            tmp_path, hub={"deadline_s": 1.0}, parking={"url": parking.url, "token": parking.token}
        )
        async with (
            Z2mLockSim(cfg.lock.base_topic, cfg.lock.device),
            backend() as link,
            running_hub(cfg) as hub,
            stb_for(hub) as stb,
        ):
            updates = []
            codes = await stb.request_codes(on_update=updates.append)
            assert codes is not None
            assert codes.door_state is PartState.ISSUED and codes.parking_state is PartState.FAILED
            # The door code reached the STB before the parking deadline ran out.
            first_door = next(u for u in updates if u.door_state is PartState.ISSUED)
            assert not first_door.final and first_door.parking_state is PartState.PENDING
            failed = await next_event(link, hub.hub_id, "failed")
            assert failed.data["what"] == "parking_pass" and "503" in failed.data["reason"]


async def test_parking_uses_home_fallback_without_backend_context(tmp_path: Path) -> None:
    async with ParkingSim(nested=True) as parking:
        cfg = write_config(
            tmp_path,
            link={"broker": None},
            parking={
                "url": parking.url,
                "token": parking.token,
                "context_wait_s": 0.2,
                "request_fields": {"uid": "resident.id", "valid_until": "validity.until", "reference": ""},
                "code_path": "pass.code",
                "valid_until_path": "pass.valid_until",
            },
        )
        async with (
            Z2mLockSim(cfg.lock.base_topic, cfg.lock.device),
            running_hub(cfg) as hub,
            stb_for(hub) as stb,
        ):
            codes = await stb.request_codes()
        assert codes is not None and codes.parking_state is PartState.ISSUED
        req = parking.requests[-1]
        assert req["resident"] == {"id": "U-HOME"} and req["address"] == "1 Fallback Road"
        assert "reference" not in req and req["validity"]["until"].endswith("Z")
        assert codes.parking_valid_until_ms is not None and codes.parking_valid_until_ms > time.time() * 1000


async def test_restart_keeps_code_expiry(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, hub={"code_ttl_s": 2.5}, link={"broker": None})
    async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock:
        async with running_hub(cfg) as hub, stb_for(hub) as stb:
            codes = await stb.request_codes()
            assert codes is not None
        # The hub is gone; the lock still holds the code.
        assert lock.temporary() == {20: codes.door_code}
        async with running_hub(cfg) as hub2:
            assert [c.slot for c in hub2.slots.codes()] == [20]
            await wait_for(
                lambda: lock.temporary() == {} and hub2.slots.codes() == [],
                timeout_s=6,
                what="cleared after restart",
            )
            assert (
                codes.door_valid_until_ms is not None and time.time() * 1000 >= codes.door_valid_until_ms - 50
            )


async def test_restart_after_expiry_clears_at_once(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, hub={"code_ttl_s": 1.0}, link={"broker": None})
    async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock:
        async with running_hub(cfg) as hub, stb_for(hub) as stb:
            codes = await stb.request_codes()
            assert codes is not None
            await hub.close()  # stop before the expiry fires (close twice is harmless)
        await asyncio.sleep(1.2)
        assert lock.temporary() == {20: codes.door_code}
        async with running_hub(cfg):
            await wait_for(lambda: lock.temporary() == {}, timeout_s=3, what="overdue code cleared on start")


async def test_events_wait_for_the_backend_link_and_the_door_code_does_not(tmp_path: Path) -> None:
    port = free_port()
    with mosquitto(port=port):
        cfg = write_config(tmp_path, link={"broker": f"127.0.0.1:{port}"})
        async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock, running_hub(cfg) as hub:
            assert hub.uplink is not None and hub.uplink.connected.is_set()
    # The operator's broker is gone; the press still gets its code at once.
    async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock:
        hub = HubService(cfg)
        await hub.start()
        try:
            async with stb_for(hub) as stb:
                codes = await stb.request_codes()
            assert codes is not None and codes.door_state is PartState.ISSUED
            assert lock.temporary() == {20: codes.door_code}
            assert hub.uplink is not None and not hub.uplink.connected.is_set()
            # The broker comes back: the queued event is delivered.
            with mosquitto(port=port):
                async with HubLink(HostPort("127.0.0.1", port)) as link:
                    door = await next_event(link, hub.hub_id, "door_code", timeout_s=10)
                    assert door.data["code"] == codes.door_code
        finally:
            await hub.close()


async def test_revoke_sent_while_the_hub_was_away_is_carried_out_on_return(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device) as lock, backend() as link:
        async with running_hub(cfg) as hub, stb_for(hub) as stb:
            codes = await stb.request_codes()
            assert codes is not None and lock.temporary() == {20: codes.door_code}
        # The hub is offline (its session stays on the broker); the family presses Revoke now.
        revoke = asyncio.create_task(link.revoke(cfg.hub.id or "", timeout_s=15))
        await asyncio.sleep(0.5)
        assert not revoke.done() and lock.temporary() == {20: codes.door_code}
        async with running_hub(cfg):
            result = await revoke
        assert result.cleared == (20,) and lock.temporary() == {}


async def test_lock_without_expose_pin_confirms_by_status_only(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, link={"broker": None})
    async with (
        Z2mLockSim(cfg.lock.base_topic, cfg.lock.device, expose_pin=False) as lock,
        running_hub(cfg) as hub,
    ):
        async with stb_for(hub) as stb:
            codes = await stb.request_codes()
            assert codes is not None and codes.door_state is PartState.ISSUED
            assert lock.temporary() == {20: codes.door_code}
            revoked = await stb.revoke()
        assert revoked is not None and revoked.cleared == 1 and lock.temporary() == {}


async def test_backend_link_reconnects_after_the_broker_restarts(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, link={"broker": f"127.0.0.1:{port}"})
    with mosquitto(port=port):
        link = HubLink(HostPort("127.0.0.1", port), client_id=unique("backend"))
        await link.__aenter__()
    try:
        # The broker restarted (sessions lost); the link comes back by itself and works again.
        with mosquitto(port=port):
            async with Z2mLockSim(cfg.lock.base_topic, cfg.lock.device), running_hub(cfg) as hub:
                async with stb_for(hub) as stb:
                    codes = await stb.request_codes()
                assert codes is not None
                await wait_for(lambda: link.connects == 2, timeout_s=8, what="link reconnected")
                result = await link.revoke(hub.hub_id, timeout_s=10)
                assert result.cleared == (20,)
    finally:
        await link.__aexit__(None, None, None)
