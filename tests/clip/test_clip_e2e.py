"""Camera clips end to end, all real: GStreamer RTSP cameras (Debian's python3-gi), the hub buffering
them with ffmpeg, an STB press over UDP, the backend's context with its upload grant over a private
Mosquitto, the uploads over loopback HTTP into the backend's archive, and the family page playing the
clip in headless Chromium.

One scenario (module scope, about 30 s) serves every test here: three cameras on one hub --
`steady` (H.264, RTSP Basic auth with a password that needs percent-encoding), `hevc` (H.265 only,
so the hub re-encodes it) and `flaky` (H.264 on a second server that is stopped mid-buffer and
started again). `clip_s` is 12 s and `first_s` 6 s, segments 2 s, keyframes every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from playwright.async_api import async_playwright

from tests.clip.camera import FrameTimes, RtspCamera, frame_times, probe, pts_steps_s
from tests.clip.conftest import ClipSite, make_site
from tests.hub.broker import mosquitto
from voip_sos.clips.archive import CLIP_STORED
from voip_sos.clips.tokens import ClipGrants
from voip_sos.config import HostPort
from voip_sos.hub.aio import open_hub_client
from voip_sos.hub.config import load_hub_config
from voip_sos.hub.link import HubLink
from voip_sos.hub.service import HubService
from voip_sos.hub.topics import HubEvent, IncidentContext

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLIP_S, FIRST_S, SEGMENT_S = 12.0, 6.0, 2.0
STB_KEY = bytes(range(32))
PASSWORD = "pa ss@w/1"  # needs percent-encoding in the RTSP URL
CHROMIUM = "/usr/bin/chromium"
CAMERAS = ("flaky", "hevc", "steady")


@dataclass
class Scenario:
    site: ClipSite
    incident: int
    hub_id: str
    press_at: float
    events: list[HubEvent]
    clips: dict[tuple[str, str], Path]
    """(camera, part) -> the clip as the family page serves it."""
    stored_order: list[tuple[str, str]]
    family_url: str

    def camera_events(self, camera: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.kind == "camera" and e.data.get("camera") == camera]

    def frames(self, camera: str, part: str) -> FrameTimes:
        return frame_times(self.clips[(camera, part)])


async def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _hub_yaml(tmp: Path, hub_id: str, mqtt_port: int, cam_a: RtspCamera, cam_b: RtspCamera) -> Path:
    path = tmp / "hub.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "hub": {"id": hub_id, "listen": "127.0.0.1:0", "stb_key": STB_KEY.hex(), "stb_ip": "127.0.0.1",
                        "state_file": str(tmp / "hub-state.json")},
                "link": {"broker": f"127.0.0.1:{mqtt_port}"},
                "lock": {"kind": "none"},
                "clip": {
                    "cameras": [
                        {"name": "steady", "url": cam_a.url("steady"), "username": "viewer", "password": PASSWORD,
                         "mode": "auto"},
                        {"name": "hevc", "url": cam_a.url("hevc"), "username": "viewer", "password": PASSWORD},
                        {"name": "flaky", "url": cam_b.url("flaky"), "mode": "copy"},
                    ],
                    "clip_s": CLIP_S, "first_s": FIRST_S, "segment_s": SEGMENT_S, "margin_s": 10,
                    "buffer_dir": str(tmp / "buffer"),
                },
            }
        ),
        encoding="utf-8",
    )  # fmt: skip
    return path


async def _press_and_collect(site: ClipSite, hub: HubService, link: HubLink, cam_b: RtspCamera,
                             tmp: Path) -> tuple[int, float, list[tuple[str, str]], dict[tuple[str, str], Path], str]:  # fmt: skip
    """Buffer, lose and regain the flaky camera, press, and fetch every clip the family gets."""
    assert hub.clips is not None
    recorders = hub.clips.recorders

    async def all_recording() -> bool:
        return all(r.health.state == "recording" for r in recorders.values())

    async def flaky_back() -> bool:
        r = recorders["flaky"]
        return bool(r.gaps) and r.health.state == "recording"

    await _wait(all_recording, 30, "every camera recording")
    recording_since = time.time()
    # The second camera server goes away mid-buffer and comes back 4 s later.
    await asyncio.sleep(6)
    cam_b.stop()
    await asyncio.sleep(4)
    cam_b.start()
    await cam_b.ready()
    await _wait(flaky_back, 30, "the flaky camera reconnecting")
    await asyncio.sleep(max(0.0, recording_since + CLIP_S + 6 - time.time()))

    # The press: the STB's instruction to the hub; the backend's SOS -> incident -> context with
    # the upload grant to the hub (what serve's hub bridge does).
    incident = await site.open_incident(1)
    assert hub.endpoint is not None
    stb = await open_hub_client(STB_KEY, hub.endpoint.local_addr, give_up_s=10)
    try:
        press = asyncio.create_task(stb.request_codes())
        ctx = await ClipGrants(site.links, site.base, 3600)(
            IncidentContext(str(incident), "c00001", "1 Road", "+8613800000001"), hub.hub_id
        )
        await link.send_context(hub.hub_id, ctx)
        await asyncio.wait_for(press, 15)
    finally:
        stb.close()
    [job] = hub.clips.jobs.values()
    order: list[tuple[str, str]] = []

    async def all_stored() -> bool:
        for rec in await site.archive.for_incident(incident):
            if (rec.camera, rec.part) not in order:
                order.append((rec.camera, rec.part))
        return len(order) == 2 * len(CAMERAS)

    await _wait(all_stored, 90, "six clips stored")
    family = await site.family(incident)
    paths: dict[tuple[str, str], Path] = {}
    async with aiohttp.ClientSession() as http:
        async with http.get(family + "/state") as resp:
            state = await resp.json()
        for c in state["clips"]:
            async with http.get(f"{family}/clip/{c['id']}") as resp:
                assert resp.status == 200
                path = tmp / f"{c['camera']}-{c['part']}.mp4"
                await asyncio.to_thread(path.write_bytes, await resp.read())
                paths[(c["camera"], c["part"])] = path
    return incident, job.press_at, order, paths, family


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scenario(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scenario]:
    tmp = tmp_path_factory.mktemp("clip-e2e")
    cam_a = RtspCamera(live={"steady": "h264", "hevc": "h265"}, user="viewer", password=PASSWORD)
    cam_b = RtspCamera(live={"flaky": "h264"})
    hub_id = f"hub-clip-{os.getpid()}"
    events: list[HubEvent] = []
    with mosquitto() as mqtt_port, cam_a, cam_b:
        await cam_a.ready()
        await cam_b.ready()
        cfg = load_hub_config(_hub_yaml(tmp, hub_id, mqtt_port, cam_a, cam_b), environ={})
        async with (
            make_site(f"sqlite+aiosqlite:///{tmp / 'directory.db'}", tmp) as site,
            HubLink(HostPort("127.0.0.1", mqtt_port), client_id=f"backend-{os.getpid()}") as link,
        ):

            async def collect() -> None:
                async for event in link.events():
                    events.append(event)

            collector = asyncio.create_task(collect())
            hub = HubService(cfg)
            await hub.start()
            try:
                incident, press_at, order, paths, family = await _press_and_collect(
                    site, hub, link, cam_b, tmp
                )
                await asyncio.sleep(0.5)  # the hub's last clip events reach the backend
            finally:
                await hub.close()
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collector
            yield Scenario(site, incident, hub_id, press_at, events, paths, order, family)


async def test_every_camera_gets_its_recent_clip_then_its_full_clip(scenario: Scenario) -> None:
    assert set(scenario.clips) == {(c, p) for c in CAMERAS for p in ("recent", "full")}
    for camera in CAMERAS:
        assert scenario.stored_order.index((camera, "recent")) < scenario.stored_order.index((camera, "full"))
    # Full clips are uploaded only once every recent clip has settled.
    last_recent = max(scenario.stored_order.index((c, "recent")) for c in CAMERAS)
    first_full = min(scenario.stored_order.index((c, "full")) for c in CAMERAS)
    assert last_recent < first_full
    # Sizes and durations are on the incident; the hub reported each upload.
    stored = await scenario.site.events(scenario.incident, CLIP_STORED)
    assert len(stored) == 6
    for e in stored:
        assert (
            e.detail["bytes"] > 10_000 and e.detail["duration_s"] > 0 and e.detail["hub"] == scenario.hub_id
        )
    uploaded = [e.data for e in scenario.events if e.kind == "clip"]
    assert sorted((d["camera"], d["part"], d["state"]) for d in uploaded) == sorted(
        (c, p, "uploaded") for c in CAMERAS for p in ("recent", "full")
    )
    assert all(d["incident"] == str(scenario.incident) for d in uploaded)


async def test_clip_length_and_last_frame_match_the_press(scenario: Scenario) -> None:
    for part, seconds in (("full", CLIP_S), ("recent", FIRST_S)):
        path = scenario.clips[("steady", part)]
        info = probe(path)
        assert info["codec"] == "h264" and info["faststart"], info
        duration = float(str(info["duration_s"]))
        # Cut at segment (keyframe) boundaries: at least what was asked, at most one segment more.
        assert seconds - 0.1 <= duration <= seconds + SEGMENT_S + 0.5, (part, duration)
        # The joins keep the camera's pace (10 fps): no frame squeezed against the one before.
        assert min(pts_steps_s(path)) > 0.08, part
        frames = scenario.frames("steady", part)
        assert frames.unreadable == 0 and len(frames.times_ms) >= duration * 8
        # The last frame is the press, give or take the segment the press fell in.
        assert abs(frames.last_s - scenario.press_at) <= 3.0, (part, frames.last_s - scenario.press_at)
        assert abs((frames.last_s - frames.first_s) - duration) <= 1.0
        assert frames.largest_jump_s() < 1.0  # no gap on this camera


async def test_camera_lost_mid_buffer_reconnects_and_the_clip_spans_the_gap(scenario: Scenario) -> None:
    states = [d["state"] for d in scenario.camera_events("flaky")]
    assert "reconnecting" in states and states[-1] in ("recording", "stopped")
    gaps = [d["gap"] for d in scenario.camera_events("flaky") if d.get("gap")]
    assert gaps and gaps[0]["end"] - gaps[0]["start"] >= 3.0
    [full] = [e for e in await scenario.site.events(scenario.incident, CLIP_STORED)
              if e.detail["camera"] == "flaky" and e.detail["part"] == "full"]  # fmt: skip
    assert len(full.detail["gaps"]) == 1
    frames = scenario.frames("flaky", "full")
    assert frames.unreadable == 0
    assert frames.largest_jump_s() >= 3.0  # video from before the drop, then from after it
    assert abs(frames.last_s - scenario.press_at) <= 3.0


async def test_h265_camera_is_buffered_as_low_resolution_h264(scenario: Scenario) -> None:
    info = probe(scenario.clips[("hevc", "full")])
    assert info["codec"] == "h264" and int(str(info["height"])) <= 360
    frames = scenario.frames("hevc", "full")
    assert frames.unreadable == 0 and abs(frames.last_s - scenario.press_at) <= 3.5
    events = scenario.camera_events("hevc")
    assert any(d["codec"] == "hevc" and d["transcoding"] for d in events)
    assert any(d["codec"] == "h264" and not d["transcoding"] for d in scenario.camera_events("steady"))


async def test_family_page_plays_the_clip_in_chromium(scenario: Scenario, tmp_path: Path) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            await page.goto(scenario.family_url)
            videos = page.locator("#clips video")
            await videos.nth(len(CAMERAS) - 1).wait_for(timeout=10_000)
            assert await videos.count() == len(CAMERAS)
            # The full clip is what each player shows once it is there.
            assert {await videos.nth(i).get_attribute("data-part") for i in range(len(CAMERAS))} == {"full"}
            steady = page.locator('#clips video[data-camera="steady"]')
            await steady.evaluate("v => { v.muted = true; return v.play(); }")
            await page.wait_for_function(
                "v => v.ended || v.currentTime > 1.5", arg=await steady.element_handle(), timeout=15_000
            )
            width = await steady.evaluate("v => v.videoWidth")
            assert width == 320
            caption = await page.locator("#clips figcaption").first.inner_text()
            assert "before the alarm" in caption
            shot = await page.screenshot(path=str(tmp_path / "family-clips.png"), full_page=True)
        finally:
            await browser.close()
    assert len(shot) > 10_000
    if os.environ.get("FAMILY_SCREENSHOTS"):  # copy it out for a person to look at
        _copy_out(shot, Path(os.environ["FAMILY_SCREENSHOTS"]) / "family-clips.png")


def _copy_out(data: bytes, to: Path) -> None:
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_bytes(data)
