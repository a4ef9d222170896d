"""The Home Assistant lock adapter against a simulator of HA's REST API over real HTTP."""

from __future__ import annotations

from pathlib import Path

from tests.hub.hub_sims import HaLockSim, Slot
from tests.hub.hub_support import backend, next_event, running_hub, stb_for, write_config
from voip_sos.hub.config import LockSection
from voip_sos.hub.locks import HomeAssistantLock, LockError
from voip_sos.hub.wire import PartState


def ha_lock(url: str, token: str) -> dict[str, object]:
    return {"kind": "homeassistant", "url": url, "token": token, "entity": "lock.front_door", "slots": [7, 8]}


async def test_press_then_revoke_through_home_assistant(tmp_path: Path) -> None:
    async with HaLockSim(token="ha-secret") as ha:
        ha.users[1] = Slot("13579", permanent=True)
        cfg = write_config(tmp_path, lock=ha_lock(ha.url, "ha-secret"))
        async with backend() as link, running_hub(cfg) as hub, stb_for(hub) as stb:
            codes = await stb.request_codes()
            assert codes is not None and codes.door_state is PartState.ISSUED
            assert ha.temporary() == {7: codes.door_code}
            assert ha.calls[0] == (
                "set_lock_usercode",
                {"entity_id": "lock.front_door", "code_slot": 7, "usercode": codes.door_code},
            )
            door = await next_event(link, hub.hub_id, "door_code")
            assert door.data["code"] == codes.door_code
            result = await link.revoke(hub.hub_id, timeout_s=10)
            assert result.cleared == (7,) and result.failed == ()
            assert ha.calls[-1] == ("clear_lock_usercode", {"entity_id": "lock.front_door", "code_slot": 7})
            assert {u: s.code for u, s in ha.users.items()} == {1: "13579"}


async def test_home_assistant_offline_is_retried_then_reported(tmp_path: Path) -> None:
    async with HaLockSim(token="ha-secret", online=False) as ha:
        cfg = write_config(tmp_path, hub={"deadline_s": 1.0}, lock=ha_lock(ha.url, "ha-secret"))
        async with backend() as link, running_hub(cfg) as hub, stb_for(hub) as stb:
            codes = await stb.request_codes()
            assert codes is not None and codes.door_state is PartState.FAILED and codes.door_code is None
            failed = await next_event(link, hub.hub_id, "failed")
            assert failed.data["what"] == "door_code" and "500" in failed.data["reason"]
            assert failed.data["attempts"] >= 2
            assert (
                sum(1 for service, _ in ha.calls if service == "set_lock_usercode") == failed.data["attempts"]
            )


async def test_home_assistant_wrong_token_is_an_error(tmp_path: Path) -> None:
    async with HaLockSim(token="right") as ha:
        cfg = write_config(tmp_path, lock=ha_lock(ha.url, "wrong"))
        lock = HomeAssistantLock(cfg.lock)
        await lock.start()
        try:
            try:
                await lock.set_code(7, "123456", 2.0)
            except LockError as exc:
                assert "401" in str(exc)
            else:
                raise AssertionError("a refused token must not count as confirmed")
        finally:
            await lock.close()
        assert ha.users == {}


async def test_home_assistant_unreachable_is_an_error() -> None:
    cfg = LockSection(kind="homeassistant", url="http://127.0.0.1:9", token="t")
    lock = HomeAssistantLock(cfg)
    await lock.start()
    try:
        try:
            await lock.clear_code(7, 1.0)
        except LockError as exc:
            assert "unreachable" in str(exc)
        else:
            raise AssertionError("expected LockError")
    finally:
        await lock.close()
