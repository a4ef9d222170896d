"""A real backend for the clip tests: database (SQLite file, or PostgreSQL via `db_url`), link store,
clip archive in a folder, family pages and the upload endpoint on a loopback HTTP server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.peers import free_port
from voip_sos.clips.archive import ClipArchive, EventSink
from voip_sos.clips.storage import LocalClipStorage
from voip_sos.clips.tokens import ClipUploadGrant, issue_clip_upload
from voip_sos.config import HostPort, HttpConfig
from voip_sos.directory.schema import create_engine, upgrade
from voip_sos.incidents.store import IncidentEvent, IncidentStore, RequestRecord
from voip_sos.web import DbLinkStore, FamilyPages, family_url, issue_family_link, start_http


@dataclass
class ClipSite:
    base: str
    links: DbLinkStore
    incidents: IncidentStore
    archive: ClipArchive
    clip_dir: Path

    async def open_incident(self, n: int) -> int:
        [rec] = await self.incidents.record(
            [
                RequestRecord(
                    "sos", os.urandom(16), f"10.8.0.{n}", f"c{n:05d}", datetime.now(UTC),
                    lookup={"uid": f"c{n:05d}", "name": "Li Wei", "address": "1 Road", "language": "en",
                            "contacts": 1},
                )
            ]
        )  # fmt: skip
        assert rec.opened and rec.incident_id is not None
        return rec.incident_id

    async def grant(self, incident_id: int, hub: str = "hub-a", ttl_s: float = 3600,
                    now: datetime | None = None) -> ClipUploadGrant:  # fmt: skip
        return await issue_clip_upload(
            self.links, public_url=self.base, incident_id=incident_id, hub_id=hub, ttl_s=ttl_s, now=now
        )

    async def family(self, incident_id: int, ttl_s: float = 3600) -> str:
        return family_url(self.base, await issue_family_link(self.links, incident_id, "contact:0", ttl_s))

    async def events(self, incident_id: int, kind: str) -> list[IncidentEvent]:
        return [e for e in await self.incidents.events(incident_id) if e.kind == kind]


@asynccontextmanager
async def make_site(db_url: str, folder: Path, *, retention_s: float = 3600, max_bytes: int = 50_000_000,
                    events: Callable[[IncidentStore], EventSink] | None = None) -> AsyncIterator[ClipSite]:  # fmt: skip
    """The backend on `db_url`; `events` wraps the incident store the archive logs to (the benchmark
    notes when each clip is stored)."""
    await upgrade(db_url)
    engine = create_engine(db_url)
    incidents = IncidentStore(engine)
    links = DbLinkStore(engine, write=incidents.write)  # one writer for the database, as in serve
    clip_dir = folder / "clips"
    archive = ClipArchive(
        engine, LocalClipStorage(clip_dir), events(incidents) if events else incidents,
        retention_s=retention_s, upload_ttl_s=600, write=incidents.write,
        max_bytes=max_bytes,
    )  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pages = FamilyPages(incidents, public_url=base, clips=archive)
    cfg = HttpConfig(listen=HostPort("127.0.0.1", port), public_url=base)
    servers = await start_http(cfg, links, None, None, family=pages, clips=archive)
    try:
        yield ClipSite(base, links, incidents, archive, clip_dir)
    finally:
        await servers.close()
        await incidents.aclose()
        await engine.dispose()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[ClipSite]:
    async with make_site(f"sqlite+aiosqlite:///{tmp_path / 'directory.db'}", tmp_path) as s:
        yield s


@pytest.fixture
async def any_site(db_url: str, tmp_path: Path) -> AsyncIterator[ClipSite]:
    """The same on SQLite and on PostgreSQL."""
    async with make_site(db_url, tmp_path) as s:
        yield s


@pytest.fixture(scope="session")
def sample_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-second H.264 MP4 (+faststart), made once with ffmpeg's test source."""
    out = tmp_path_factory.mktemp("media") / "sample.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "3",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-pix_fmt", "yuv420p",
         "-movflags", "+faststart", str(out)],
        check=True, timeout=60,
    )  # fmt: skip
    return out
