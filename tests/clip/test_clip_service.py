"""The hub's clip service without live cameras: clips from a Frigate double over real HTTP, uploaded
to the real backend; Frigate's lag, unknown cameras, an upload that breaks and is retried, and a
hub restart that resumes the clips waiting in its outbox."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.clip.camera import top_level_boxes
from tests.clip.conftest import ClipSite
from tests.clip.frigate_double import FrigateDouble
from tests.clip.test_clip_backend import CuttingProxy
from voip_sos.hub.cameras import Camera
from voip_sos.hub.clip.jobs import ClipItem, ClipJob
from voip_sos.hub.clip.service import ClipService
from voip_sos.hub.config import ClipSection
from voip_sos.hub.topics import IncidentContext


def frigate_cfg(tmp: Path, url: str, *cameras: Camera, wait_s: float = 10.0, token: str = "") -> ClipSection:
    return ClipSection(cameras=cameras, clip_s=20.0, first_s=5.0, buffer_dir=str(tmp / "hub"),
                       source="frigate", frigate_url=url, frigate_token=token, frigate_wait_s=wait_s)  # fmt: skip


async def wait_until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def stored(site: ClipSite, incident: int, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(await site.archive.for_incident(incident)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} clips stored within {timeout_s} s")
        await asyncio.sleep(0.1)


async def test_frigate_clips_wait_for_its_recordings_then_upload(site: ClipSite, tmp_path: Path) -> None:
    frigate = FrigateDouble({"front_door"}, covered_until=time.time() - 8, token="frigate-jwt")
    url = await frigate.start()
    published: list[tuple[str, dict[str, object]]] = []
    svc = ClipService("hub-f", frigate_cfg(tmp_path, url, Camera("porch", frigate_camera="front_door"),
                                           token="frigate-jwt"), lambda k, d: published.append((k, d)))  # fmt: skip
    await svc.start()
    try:
        job = svc.on_press()
        incident = await site.open_incident(1)
        grant = await site.grant(incident, hub="hub-f")
        assert svc.on_context(IncidentContext(str(incident), "u", "a", "+861", grant.url, grant.token)) is job
        await asyncio.sleep(1.5)
        assert not frigate.clip_requests  # the last seconds are not in Frigate yet: it waits
        frigate.covered_until = job.press_at + 3  # Frigate moved the segment holding the press
        await stored(site, incident, 2)
        # The backend stores the clip before it answers the last chunk; the hub reports after it.
        await wait_until(lambda: job.done, 10, "the hub seeing both uploads answered")
    finally:
        await svc.close()
        await frigate.close()
    assert len(frigate.recording_queries) >= 2
    requests = sorted(frigate.clip_requests, key=lambda r: r[1])
    assert [r[0] for r in requests] == ["front_door", "front_door"]
    assert (
        abs(requests[0][1] - (job.press_at - 20)) < 0.01 and abs(requests[1][1] - (job.press_at - 5)) < 0.01
    )
    assert all(abs(end - job.press_at) < 0.01 for _, _, end in requests)
    clips = {c.part: c for c in await site.archive.for_incident(incident)}
    assert abs(clips["recent"].duration_s - 5) < 1.0 and abs(clips["full"].duration_s - 20) < 1.0
    for c in clips.values():
        # Frigate's fragmented MP4 became a plain one with the index up front.
        boxes = top_level_boxes(site.clip_dir / c.storage_key)
        assert boxes.index("moov") < boxes.index("mdat") and "moof" not in boxes
    outcomes = sorted((d["part"], d["state"]) for k, d in published if k == "clip")
    assert outcomes == [("full", "uploaded"), ("recent", "uploaded")]
    assert not (tmp_path / "hub" / "outbox" / job.id).exists()  # done: nothing left on the hub


async def test_a_camera_frigate_does_not_know_fails_and_is_reported(site: ClipSite, tmp_path: Path) -> None:
    frigate = FrigateDouble({"front_door"}, covered_until=time.time() + 60)
    url = await frigate.start()
    published: list[tuple[str, dict[str, object]]] = []
    svc = ClipService("hub-f", frigate_cfg(tmp_path, url, Camera("garage"), wait_s=1.0),
                      lambda k, d: published.append((k, d)))  # fmt: skip
    await svc.start()
    try:
        job = svc.on_press()
        await wait_until(lambda: job.done, 15, "both clips failed")
    finally:
        await svc.close()
        await frigate.close()
    assert {i.state for i in job.items} == {"failed"}
    assert all("Frigate has no recordings of garage" in (i.error or "") for i in job.items)
    failed = [d for k, d in published if k == "clip"]
    assert len(failed) == 2 and all(d["state"] == "failed" and d["error"] for d in failed)


async def test_clips_survive_a_hub_restart_and_a_broken_upload(site: ClipSite, tmp_path: Path) -> None:
    frigate = FrigateDouble({"front_door"}, covered_until=time.time() + 60)
    url = await frigate.start()
    cfg = frigate_cfg(tmp_path, url, Camera("porch", frigate_camera="front_door"))
    cut: list[tuple[str, str]] = []

    def on_item(job: ClipJob, item: ClipItem) -> None:
        if item.state == "cut":
            cut.append((item.camera, item.part))

    first = ClipService("hub-r", cfg)
    first.on_item = on_item
    await first.start()
    try:
        job = first.on_press()  # no context yet (the backend is unreachable): clips wait on disk
        await wait_until(lambda: len(cut) == 2, 20, "both clips cut")
    finally:
        await first.close()
    assert (tmp_path / "hub" / "outbox" / job.id / "job.json").exists()

    incident = await site.open_incident(2)
    grant = await site.grant(incident, hub="hub-r")
    proxy = CuttingProxy(int(site.base.rsplit(":", 1)[1]), cut_after=20_000)
    proxy_port = await proxy.start()
    proxied = grant.url.replace(site.base, f"http://127.0.0.1:{proxy_port}")
    second = ClipService("hub-r", cfg)
    await second.start()
    try:
        assert list(second.jobs) == [job.id]  # resumed from the outbox
        second.on_context(IncidentContext(str(incident), "u", "a", "+861", proxied, grant.token))
        await stored(site, incident, 2)
        await wait_until(lambda: not second.jobs, 10, "the job finishing")
    finally:
        await second.close()
        await proxy.close()
        await frigate.close()
    assert proxy.connections >= 2 and any(o > 0 for o in proxy.offsets)  # retried, resumed
    assert len(frigate.clip_requests) == 2  # cut once, before the restart
    assert len(await site.events(incident, "clip_stored")) == 2
    assert not (tmp_path / "hub" / "outbox" / job.id).exists()
