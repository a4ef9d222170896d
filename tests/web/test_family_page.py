"""The family's page end to end: the link server over loopback HTTP, the incident log in a real
SQLite file (the state endpoint also on PostgreSQL), and the page itself in headless Chromium
(Debian's /usr/bin/chromium driven by Playwright; Playwright never downloads a browser here).

The Revoker is `RecordingRevoker`, an in-process class implementing the `Revoker` Protocol that
records each call and answers like a hub whose lock confirmed clearing two slots. The real path
(backend -> MQTT -> hub -> lock) is wired by the lead and tested with the hub; everything else
here is real: HTTP, the database, the browser.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from voip_sos.config import HostPort, HttpConfig
from voip_sos.directory.schema import create_engine, upgrade
from voip_sos.incidents.store import EventRecord, IncidentStore, RequestRecord
from voip_sos.web import (
    Codes,
    DbLinkStore,
    FamilyPages,
    HttpServers,
    Link,
    RevokeResult,
    family_url,
    issue_family_link,
    start_http,
)
from voip_sos.web.family import NONCE_HEADER
from voip_sos.web.server import NOT_FOUND_TEXT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
PHONE = {"width": 390, "height": 844}
CENTRE = "110"
CONTACTS = ("+8613800001234", "+8613900005678")
UI_TIMEOUT_MS = 10_000


@dataclass
class RecordingRevoker:
    """Test double for the hub path: records each revoke and answers "slots 3 and 4 cleared,
    confirmed by the lock" (optionally only once `gate` is set, to see the pending state)."""

    calls: list[int] = field(default_factory=list)
    gate: asyncio.Event | None = None
    result: RevokeResult = field(default_factory=lambda: RevokeResult((3, 4), True, None))

    async def revoke(self, incident_id: int) -> RevokeResult:
        self.calls.append(incident_id)
        if self.gate is not None:
            await self.gate.wait()
        return self.result


@dataclass
class CodesTable:
    """Codes as the hub reported them, keyed by incident (what the lead backs with hub events)."""

    by_incident: dict[int, Codes] = field(default_factory=dict)

    async def codes(self, incident_id: int) -> Codes | None:
        return self.by_incident.get(incident_id)


@dataclass
class Site:
    base: str
    links: DbLinkStore
    incidents: IncidentStore
    revoker: RecordingRevoker
    codes: CodesTable
    pages: FamilyPages

    async def open_incident(self, n: int, *, language: str = "en", name: str = "Li Wei") -> int:
        [rec] = await self.incidents.record(
            [
                RequestRecord(
                    "sos", os.urandom(16), f"10.9.0.{n}", f"u{n:05d}", datetime.now(UTC),
                    lookup={"uid": f"u{n:05d}", "name": name, "address": "1 Road", "language": language,
                            "contacts": len(CONTACTS)},
                )
            ]
        )  # fmt: skip
        assert rec.opened and rec.incident_id is not None
        return rec.incident_id

    async def log(self, incident_id: int, event: str, /, **detail: Any) -> None:
        await self.incidents.append_events([EventRecord(incident_id, event, datetime.now(UTC), detail)])

    async def family(self, incident_id: int, party: str = "contact:1", ttl_s: float = 3600) -> str:
        return family_url(self.base, await issue_family_link(self.links, incident_id, party, ttl_s))


async def _site(db_url: str, *, revoker: bool = True) -> AsyncIterator[Site]:
    await upgrade(db_url)
    engine = create_engine(db_url)
    incidents = IncidentStore(engine)
    links = DbLinkStore(engine)
    rev, codes = RecordingRevoker(), CodesTable()
    pages = FamilyPages(incidents, rev if revoker else None, codes, public_url="https://sos.example.net")
    servers: HttpServers = await start_http(
        HttpConfig(listen=HostPort("127.0.0.1", 0)), links, None, None, family=pages
    )
    try:
        yield Site(f"http://127.0.0.1:{servers.public.port}", links, incidents, rev, codes, pages)
    finally:
        await servers.close()
        await incidents.aclose()
        await engine.dispose()


@pytest.fixture
async def site(db_url: str) -> AsyncIterator[Site]:
    async for s in _site(db_url):
        yield s


@pytest.fixture
async def sqlite_site(tmp_path: Path) -> AsyncIterator[Site]:
    async for s in _site(f"sqlite+aiosqlite:///{tmp_path / 'directory.db'}"):
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def get_state(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/state") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Referrer-Policy"] == "no-referrer" and "no-store" in resp.headers["Cache-Control"]
        body: dict[str, Any] = await resp.json()
        return body


async def call(site: Site, inc: int, party: str, number: str, result: str, *, confirmed: bool = False) -> None:
    cid = f"{party}#1"
    await site.log(inc, "call_placed", call=cid, number=number, party=party, attempt=1, language="en")
    await site.log(inc, "call_ringing", call=cid, status=180)
    await site.log(inc, "call_ringing", call=cid, status=183)
    await site.log(inc, "call_answered", call=cid, codec="PCMU", dialog={"secret": "x"})
    await site.log(inc, "call_ended", call=cid, by="remote", status=None, answered=True,
                   confirmed=confirmed, result=result)  # fmt: skip


# -- the state endpoint (SQLite and PostgreSQL) ------------------------------------------------------


async def test_state_follows_the_log_and_masks_numbers(site: Site, http: aiohttp.ClientSession) -> None:
    inc = await site.open_incident(1)
    url = await site.family(inc, "contact:1")
    st = await get_state(http, url)
    assert st["status"] == "calling" and st["closed"] is None
    assert st["incident"]["subscriber"] == "Li Wei" and st["language"] == "en"
    assert st["you"] == {"role": "contact", "index": 1, "number": "", "you": True}
    assert [s["step"] for s in st["timeline"]] == ["opened"]
    assert st["codes"]["door_code"] is None and st["revoke"] == {"state": "none", "available": True}

    await call(site, inc, "centre", CENTRE, "unconfirmed")
    await call(site, inc, "contact:0", CONTACTS[0], "confirmed", confirmed=True)
    await site.log(inc, "sms_sending", sms="sms#1", number=CONTACTS[1], kind="emergency", party="contact:1")
    await site.log(inc, "sms_result", sms="sms#1", number=CONTACTS[1], kind="emergency", status=202,
                   accepted=True, text="SOS … http://x/v/SECRETVOICELINKTOKEN00")  # fmt: skip
    await site.incidents.record(
        [RequestRecord("update", os.urandom(16), "10.9.0.1", "u00001", datetime.now(UTC),
                       detail={"door_code": "482913", "parking_code": "P-7781"})]
    )  # fmt: skip
    async with http.get(url + "/state") as resp:
        raw = await resp.text()
        st = json.loads(raw)
    assert st["status"] == "confirmed_contact"
    # No number in full, no SMS text (it carries the voice link), no SIP dialog state.
    for secret in (*CONTACTS, "13800001234", "SECRETVOICELINKTOKEN00", '"secret"'):
        assert secret not in raw, secret
    assert "•••• 1234" in raw and "•••• 5678" in raw
    assert st["reached"] == [
        {"role": "contact", "index": 0, "number": "•••• 1234", "at": st["reached"][0]["at"]}
    ]
    steps = [(s["step"], s.get("who", {}).get("role"), s.get("result")) for s in st["timeline"]]
    assert steps == [
        ("opened", None, None),
        ("calling", "centre", None),
        ("ringing", "centre", None),  # 180 and 183: one step
        ("answered", "centre", None),
        ("call_ended", "centre", "unconfirmed"),
        ("calling", "contact", None),
        ("ringing", "contact", None),
        ("answered", "contact", None),
        ("call_ended", "contact", "confirmed"),
        ("sms", "contact", None),
        ("door_code", None, None),
        ("parking_pass", None, None),
    ]
    assert st["timeline"][9]["who"]["you"] is True and st["timeline"][9]["accepted"] is True
    assert st["codes"]["door_code"] == "482913" and st["codes"]["parking_code"] == "P-7781"

    # The hub's report is authoritative over the STB's UPDATE.
    until = datetime.now(UTC) + timedelta(hours=2)
    site.codes.by_incident[inc] = Codes("600001", None, door_valid_until=until)
    st = await get_state(http, url)
    assert st["codes"]["door_code"] == "600001" and st["codes"]["parking_code"] == "P-7781"
    assert st["codes"]["door_valid_until"] == until.isoformat()

    await call(site, inc, "centre", CENTRE, "confirmed", confirmed=True)
    assert (await get_state(http, url))["status"] == "confirmed_centre"
    await site.incidents.close(inc, datetime.now(UTC), "reached")
    await site.log(inc, "incident_closed", reason="reached", reached=["centre", "contact:0"])
    st = await get_state(http, url)
    assert st["status"] == "closed" and st["closed"]["reason"] == "reached"
    assert [s["step"] for s in st["timeline"]].count("closed") == 1  # store and runner both log it
    assert [r["role"] for r in st["reached"]] == ["contact", "centre"]


async def test_unreached_is_said_honestly_and_etag_saves_polls(site: Site, http: aiohttp.ClientSession) -> None:
    inc = await site.open_incident(2)
    url = await site.family(inc, "contact:0")
    await call(site, inc, "centre", CENTRE, "no_answer")
    await site.incidents.close(inc, datetime.now(UTC), "unreached")
    async with http.get(url + "/state") as resp:
        etag = resp.headers["ETag"]
        assert (await resp.json())["status"] == "nobody_reached"
    async with http.get(url + "/state", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
    await site.log(inc, "cancel_received")
    async with http.get(url + "/state", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 200 and (await resp.json())["timeline"][-1]["step"] == "cancelled"


async def test_a_token_opens_only_its_own_incident_and_bad_ones_get_the_same_404(
    site: Site, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    mine, other = await site.open_incident(3, name="Mine"), await site.open_incident(4, name="Other")
    url = await site.family(mine)
    assert (await get_state(http, url))["incident"]["id"] == mine
    assert (await get_state(http, await site.family(other)))["incident"]["subscriber"] == "Other"
    wav = tmp_path / "v.wav"
    wav.write_bytes(b"RIFF")
    voice = await site.links.create(Link(str(mine), "voice", str(wav), datetime.now(UTC) + timedelta(hours=1)))
    expired = await site.links.create(
        Link(str(mine), "family", "contact:0", datetime.now(UTC) - timedelta(seconds=1))
    )
    family_token = url.rsplit("/", 1)[1]
    bad = [
        f"/f/{'A' * 22}", f"/f/{'A' * 22}/state", f"/f/{voice}", f"/f/{voice}/state", f"/f/{expired}",
        f"/f/{expired}/state", f"/f/{family_token}x", f"/v/{family_token}", "/f/static/../family.py",
        "/f/static/nope.js", f"/f/{family_token}/nope",
    ]  # fmt: skip
    for path in bad:
        async with http.get(site.base + path) as resp:
            assert resp.status == 404 and await resp.text() == NOT_FOUND_TEXT, path
    async with http.post(site.base + f"/f/{expired}/revoke", headers={NONCE_HEADER: "x"}) as resp:
        assert resp.status == 404 and await resp.text() == NOT_FOUND_TEXT
    async with http.put(url) as resp:
        assert resp.status == 404


# -- revoke over HTTP -----------------------------------------------------------------------------


async def test_revoke_needs_the_page_nonce_and_is_logged(
    sqlite_site: Site, http: aiohttp.ClientSession
) -> None:
    site = sqlite_site
    inc = await site.open_incident(5)
    url = await site.family(inc, "contact:0")
    nonce = (await get_state(http, url))["nonce"]
    for headers in (
        {},
        {NONCE_HEADER: "0" * 64},
        {NONCE_HEADER: nonce, "Origin": "https://evil.example"},
        {NONCE_HEADER: nonce, "Sec-Fetch-Site": "cross-site"},
    ):
        async with http.post(url + "/revoke", headers=headers) as resp:
            assert resp.status == 403, headers
    assert site.revoker.calls == []
    # Behind a reverse proxy the Origin is the public URL, not the Host the backend sees.
    assert site.pages.public_url == "https://sos.example.net"
    proxied = {NONCE_HEADER: nonce, "Origin": "https://sos.example.net", "Sec-Fetch-Site": "same-origin"}
    async with http.post(url + "/revoke", headers={**proxied, "Origin": "https://sos.example.net.evil"}) as resp:
        assert resp.status == 403
    async with http.post(url + "/revoke", headers=proxied) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["revoke"] == {"state": "done", "cleared_slots": [3, 4], "confirmed": True, "error": None}
    assert site.revoker.calls == [inc]
    async with http.post(url + "/revoke", headers={NONCE_HEADER: nonce, "Origin": site.base}) as resp:
        assert resp.status == 200  # same Host: a direct connection
    log = [(e.kind, e.detail) for e in await site.incidents.events(inc) if e.kind.startswith("revoke")]
    assert log == 2 * [
        ("revoke_requested", {"by": "contact:0"}),
        ("revoke_result", {"by": "contact:0", "cleared_slots": [3, 4], "confirmed": True, "error": None}),
    ]
    st = await get_state(http, url)
    assert st["revoke"]["state"] == "done" and st["timeline"][-1]["step"] == "revoked"

    site.revoker.result = RevokeResult((), False, "lock offline")
    async with http.post(url + "/revoke", headers={NONCE_HEADER: nonce}) as resp:
        assert (await resp.json())["revoke"]["state"] == "failed"
    st = await get_state(http, url)
    assert st["revoke"]["state"] == "failed" and st["revoke"]["error"] == "lock offline"


async def test_a_revoke_nobody_answered_is_not_pending_forever(
    sqlite_site: Site, http: aiohttp.ClientSession
) -> None:
    site = sqlite_site
    inc = await site.open_incident(9)
    url = await site.family(inc, "contact:0")
    # A backend logged the request and then stopped before the hub answered.
    await site.incidents.append_events(
        [EventRecord(inc, "revoke_requested", datetime.now(UTC) - timedelta(minutes=5), {"by": "contact:1"})]
    )
    st = await get_state(http, url)
    assert st["revoke"]["state"] == "failed" and st["revoke"]["error"] == "no answer"
    await site.log(inc, "revoke_requested", by="contact:1")  # a fresh one, maybe on another backend
    assert (await get_state(http, url))["revoke"]["state"] == "pending"


async def test_without_a_revoker_there_is_no_button_and_no_route(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async for site in _site(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", revoker=False):
        url = await site.family(await site.open_incident(6))
        st = await get_state(http, url)
        assert st["revoke"]["available"] is False
        async with http.post(url + "/revoke", headers={NONCE_HEADER: st["nonce"]}) as resp:
            assert resp.status == 404


# -- the page in Chromium -------------------------------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def phone(browser: Browser, locale: str = "en-GB") -> Page:
    ctx = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, locale=locale)
    page = await ctx.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    return page


async def test_page_updates_live_shows_codes_and_revokes(
    sqlite_site: Site, browser: Browser, tmp_path: Path
) -> None:
    site = sqlite_site
    inc = await site.open_incident(7)
    url = await site.family(inc, "contact:1")
    page = await phone(browser)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    await page.goto(url)
    await expect(page.locator("#status-title")).to_have_text("Calling for help…")
    await expect(page.locator("#door-code")).to_have_text("Not known yet")

    await call(site, inc, "centre", CENTRE, "confirmed", confirmed=True)
    await expect(page.locator("#status-title")).to_have_text("The emergency centre confirmed the alarm")
    await expect(page.locator("#timeline li").first).to_have_text(re.compile("Emergency centre confirmed \\(pressed 1\\)$"))
    await expect(page.locator("#timeline li").nth(3)).to_contain_text("Calling Emergency centre (•••• 110)")
    await expect(page.locator("#revoke")).to_be_hidden()  # no door code yet: nothing to revoke
    await expect(page.locator("#reached li")).to_contain_text("Emergency centre")

    await site.incidents.record(
        [RequestRecord("update", os.urandom(16), "10.9.0.7", "u00007", datetime.now(UTC),
                       detail={"door_code": "482913", "parking_code": "P-7781"})]
    )  # fmt: skip
    await expect(page.locator("#door-code")).to_have_text("482913")
    await expect(page.locator("#parking-code")).to_have_text("P-7781")
    await page.screenshot(path=str(tmp_path / "family-en.png"), full_page=True)
    for width in (390, 320):  # nothing sideways to scroll, even on a small phone
        await page.set_viewport_size({"width": width, "height": 844})
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width
    await page.set_viewport_size(PHONE)

    site.revoker.gate = asyncio.Event()
    await page.locator("#revoke").click()
    await expect(page.locator("#confirm")).to_be_visible()
    await page.screenshot(path=str(tmp_path / "family-confirm.png"))
    await page.locator("#confirm-yes").click()
    await expect(page.locator("#revoke-result")).to_contain_text("Revoking")
    await expect(page.locator("#revoke")).to_be_disabled()
    site.revoker.gate.set()
    await expect(page.locator("#revoke-result")).to_contain_text("the lock confirmed it")
    await expect(page.locator("#revoke-result")).to_contain_text("3, 4")
    await expect(page.locator("#door-code")).to_have_class("code revoked")
    await expect(page.locator("#timeline li").first).to_have_attribute("data-step", "revoked")
    assert site.revoker.calls == [inc]
    await page.screenshot(path=str(tmp_path / "family-revoked.png"), full_page=True)
    _keep(tmp_path)

    # Cancelling the dialog revokes nothing.
    await page.locator("#revoke").click()
    await page.locator("#confirm-no").click()
    await expect(page.locator("#confirm")).to_be_hidden()
    await asyncio.sleep(0.3)
    assert site.revoker.calls == [inc]
    # Nothing but our own origin was ever asked for.
    assert requests and all(r.startswith(site.base + "/f/") for r in requests), requests


def _keep(tmp_path: Path) -> None:
    """FAMILY_SCREENSHOTS=DIR copies the screenshots out of pytest's tmp dir for a human to look at."""
    if not os.environ.get("FAMILY_SCREENSHOTS"):
        return
    out = Path(os.environ["FAMILY_SCREENSHOTS"])
    out.mkdir(parents=True, exist_ok=True)
    for png in tmp_path.glob("*.png"):
        (out / png.name).write_bytes(png.read_bytes())


async def test_chinese_page_and_language_switch(sqlite_site: Site, browser: Browser, tmp_path: Path) -> None:
    site = sqlite_site
    inc = await site.open_incident(8, language="zh", name="王芳")
    await call(site, inc, "contact:0", CONTACTS[0], "no_answer")
    await site.incidents.close(inc, datetime.now(UTC), "unreached")
    page = await phone(browser, locale="en-GB")  # the subscriber's language wins over the phone's
    await page.goto(await site.family(inc, "contact:0"))
    await expect(page.locator("#status-title")).to_have_text("未能联系上任何人")
    await expect(page.locator("#heading")).to_have_text("SOS 紧急呼叫：王芳")
    await expect(page.locator("#timeline li").first).to_contain_text("警报已结束 — 无人确认。")
    await expect(page.locator("#timeline li").nth(1)).to_contain_text("联系人 1（您）无人接听")
    await expect(page.locator("#timeline li").last).to_contain_text("SOS 按键被按下")
    await expect(page.locator("#timeline li").nth(4)).to_contain_text("正在呼叫联系人 1（您，•••• 1234）")
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"
    await page.screenshot(path=str(tmp_path / "family-zh.png"), full_page=True)
    _keep(tmp_path)
    await page.locator("#lang").click()
    await expect(page.locator("#status-title")).to_have_text("Nobody could be reached")
    await page.reload()  # the choice sticks
    await expect(page.locator("#status-title")).to_have_text("Nobody could be reached")


async def test_a_cancel_at_the_tv_box_is_shown_as_a_false_alarm(sqlite_site: Site, browser: Browser) -> None:
    site = sqlite_site
    inc = await site.open_incident(11)
    page = await phone(browser)
    await page.goto(await site.family(inc, "contact:0"))
    await expect(page.locator("#status-title")).to_have_text("Calling for help…")
    # The real path: the STB's CANCEL recorded by the store closes the incident as a false alarm.
    [rec] = await site.incidents.record(
        [RequestRecord("cancel", os.urandom(16), "10.9.0.11", "u00011", datetime.now(UTC))]
    )
    assert rec.closed
    await expect(page.locator("#status-title")).to_have_text("The alarm is over")
    await expect(page.locator("#status-sub")).to_have_text("It was cancelled at the TV box (false alarm).")
    await expect(page.locator("#timeline li").first).to_contain_text("The alarm was closed — It was cancelled")
    await expect(page.locator("#timeline li").nth(1)).to_contain_text("The alarm was cancelled at the TV box")


async def test_page_says_so_when_its_link_expires(sqlite_site: Site, browser: Browser) -> None:
    site = sqlite_site
    page = await phone(browser)
    await page.goto(await site.family(await site.open_incident(10), ttl_s=2.0))
    await expect(page.locator("#status-title")).to_have_text("Calling for help…")
    await expect(page.locator("#status-title")).to_have_text(
        "This link does not exist or has expired.", timeout=UI_TIMEOUT_MS
    )
    await expect(page.locator("#revoke")).to_be_hidden()


async def test_page_for_a_wrong_token_is_the_plain_404(sqlite_site: Site, browser: Browser) -> None:
    page = await phone(browser)
    resp = await page.goto(f"{sqlite_site.base}/f/{'B' * 22}")
    assert resp is not None and resp.status == 404
    assert (await page.locator("body").inner_text()).strip() == NOT_FOUND_TEXT.strip()
