"""Voice links end to end: DbLinkStore on real SQLite and PostgreSQL, the link server over loopback
HTTP, a real WAV rendered with numpy/soundfile."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import text

from voip_sos.config import HostPort, HttpConfig
from voip_sos.directory.schema import create_engine, downgrade, head_revision, upgrade
from voip_sos.incidents.store import IncidentStore
from voip_sos.metrics import Metrics
from voip_sos.web import DbLinkStore, HttpServers, Link, issue_voice_link, new_token, start_http, token_hash
from voip_sos.web.server import NOT_FOUND_TEXT

SAMPLE_RATE_HZ = 8000


@pytest.fixture(params=["own connection", "through the incident writer"])
async def store(db_url: str, request: pytest.FixtureRequest) -> AsyncIterator[DbLinkStore]:
    """Both ways a link is written: on the store's own engine, and as serve does it, through the
    incident store's writer (on SQLite one autocommit statement on its thread)."""
    await upgrade(db_url)
    engine = create_engine(db_url)
    incidents = IncidentStore(engine)
    try:
        if request.param == "own connection":
            yield DbLinkStore(engine)
        else:
            yield DbLinkStore(engine, write=incidents.write, write_statement=incidents.write_statement)
    finally:
        await incidents.aclose()
        await engine.dispose()


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    """Two seconds of a 440 Hz tone with a little noise: 16-bit PCM, like a rendered prompt."""
    t = np.arange(2 * SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    rng = np.random.default_rng(7)
    signal = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)
    path = tmp_path / "prompt.wav"
    sf.write(path, signal.astype(np.float32), SAMPLE_RATE_HZ, subtype="PCM_16")
    return path


@pytest.fixture
def wav_bytes(wav: Path) -> bytes:
    return wav.read_bytes()


@pytest.fixture
async def server(store: DbLinkStore) -> AsyncIterator[HttpServers]:
    servers = await start_http(
        HttpConfig(listen=HostPort("127.0.0.1", 0)), store, Metrics().registry, health=None
    )
    try:
        yield servers
    finally:
        await servers.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def base(where: HostPort) -> str:
    return f"http://{where.host}:{where.port}"


async def voice_link(store: DbLinkStore, wav: Path, *, ttl: timedelta = timedelta(hours=1)) -> str:
    return await store.create(Link("41", "voice", str(wav), datetime.now(UTC) + ttl))


async def test_link_serves_the_exact_wav_as_audio_wav(
    store: DbLinkStore, server: HttpServers, http: aiohttp.ClientSession, wav: Path, wav_bytes: bytes
) -> None:
    token = await voice_link(store, wav)
    data = wav_bytes
    for path in (f"/v/{token}", f"/v/{token}.wav"):
        async with http.get(base(server.public) + path) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "audio/wav"
            assert resp.headers["Accept-Ranges"] == "bytes"
            assert int(resp.headers["Content-Length"]) == len(data)
            assert "no-store" in resp.headers["Cache-Control"]
            assert "Server" not in resp.headers
            body = await resp.read()
    assert body == data
    samples, rate = sf.read(io.BytesIO(body))  # what a phone gets decodes as what was rendered
    assert rate == SAMPLE_RATE_HZ and samples.shape == (2 * SAMPLE_RATE_HZ,)
    async with http.head(base(server.public) + f"/v/{token}") as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(data)


async def test_range_requests_get_206_and_the_exact_slice(
    store: DbLinkStore, server: HttpServers, http: aiohttp.ClientSession, wav: Path, wav_bytes: bytes
) -> None:
    token = await voice_link(store, wav)
    data = wav_bytes
    url = base(server.public) + f"/v/{token}"
    cases = {
        "bytes=0-43": (0, 44),  # the RIFF header alone, as a player probes it
        "bytes=100-1099": (100, 1100),
        f"bytes={len(data) - 500}-": (len(data) - 500, len(data)),
        "bytes=-300": (len(data) - 300, len(data)),
    }
    for header, (start, end) in cases.items():
        async with http.get(url, headers={"Range": header}) as resp:
            assert resp.status == 206, header
            assert resp.headers["Content-Type"] == "audio/wav"
            assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(data)}"
            assert await resp.read() == data[start:end], header
    async with http.get(url, headers={"Range": f"bytes={len(data) + 10}-"}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{len(data)}"


async def test_expired_wrong_and_malformed_tokens_and_other_paths_get_404(
    store: DbLinkStore, server: HttpServers, http: aiohttp.ClientSession, wav: Path
) -> None:
    expired = await voice_link(store, wav, ttl=timedelta(seconds=-1))
    good = await voice_link(store, wav)
    flipped = ("A" if good[0] != "A" else "B") + good[1:]
    family = await store.create(Link("41", "family", "c1", datetime.now(UTC) + timedelta(hours=1)))
    url = base(server.public)
    for path in (
        f"/v/{expired}",
        f"/v/{new_token()}",
        f"/v/{flipped}",
        f"/v/{good[:-1]}",
        f"/v/{good}x",
        f"/v/{family}",  # a family-page token does not open a voice file
        f"/v/{good}/x",
        "/v/",
        "/",
        "/admin",
        "/v",
        "/prompt.wav",
        f"/{good}",
    ):
        async with http.get(url + path) as resp:
            assert resp.status == 404, path
            assert await resp.text() == NOT_FOUND_TEXT, path
            assert "Server" not in resp.headers
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        async with http.request(method, url + f"/v/{good}") as resp:
            assert resp.status == 404, method
    async with http.get(url + f"/v/{good}") as resp:
        assert resp.status == 200


async def test_valid_token_whose_file_is_gone_gets_the_same_404(
    store: DbLinkStore, server: HttpServers, http: aiohttp.ClientSession, wav: Path
) -> None:
    token = await voice_link(store, wav)
    await asyncio.to_thread(wav.unlink)
    async with http.get(base(server.public) + f"/v/{token}") as resp:
        assert resp.status == 404
        assert await resp.text() == NOT_FOUND_TEXT


async def test_store_resolves_until_expiry_and_purges_only_expired(store: DbLinkStore, wav: Path) -> None:
    t0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    token = await store.create(Link("7", "voice", str(wav), t0 + timedelta(seconds=86400)), now=t0)
    old = await store.create(Link("6", "voice", str(wav), t0 - timedelta(seconds=1)), now=t0)
    link = await store.resolve(token, t0 + timedelta(seconds=86399))
    assert link == Link("7", "voice", str(wav), t0 + timedelta(seconds=86400))
    assert await store.resolve(token, t0 + timedelta(seconds=86400)) is None  # expiry is exclusive
    assert await store.resolve(old, t0) is None
    assert await store.resolve(new_token(), t0) is None
    assert await store.resolve("not a token ü", t0) is None
    assert await store.purge_expired(t0) == 1
    assert await store.resolve(token, t0) is not None
    assert await store.purge_expired(t0 + timedelta(days=2)) == 1
    assert await store.resolve(token, t0) is None


async def test_tokens_are_unique_and_128_bit(store: DbLinkStore, wav: Path) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    tokens = [await store.create(Link(str(i), "voice", str(wav), expires)) for i in range(50)]
    assert len(set(tokens)) == 50
    assert all(len(t) == 22 for t in tokens)  # 16 bytes, unpadded URL-safe base64
    for i, token in enumerate(tokens):
        link = await store.resolve(token, datetime.now(UTC))
        assert link is not None and link.incident_id == str(i)


async def test_tokens_are_not_stored_in_clear(db_url: str, store: DbLinkStore, wav: Path) -> None:
    tokens = [await voice_link(store, wav) for _ in range(5)]
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM links"))).all()
    finally:
        await engine.dispose()
    stored = " ".join(str(value) for row in rows for value in row)
    assert len(rows) == 5
    for token in tokens:
        assert token not in stored
        assert token_hash(token) in stored
    if db_url.startswith("sqlite"):
        # Nor anywhere in the database files (main file and write-ahead log).
        db = Path(db_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
        assert all(token.encode() not in raw for token in tokens)
        assert all(token_hash(token).encode() in raw for token in tokens)


async def test_issue_voice_link_gives_the_sms_url(
    store: DbLinkStore, server: HttpServers, http: aiohttp.ClientSession, wav: Path, wav_bytes: bytes
) -> None:
    url = await issue_voice_link(
        store, public_url=base(server.public) + "/", ttl_s=86400, incident_id="9", wav=str(wav),
        now=datetime.now(UTC),
    )  # fmt: skip
    assert url.startswith(base(server.public) + "/v/") and len(url) == len(base(server.public)) + 3 + 22
    async with http.get(url) as resp:
        assert resp.status == 200 and await resp.read() == wav_bytes
    expired = await issue_voice_link(
        store, public_url=base(server.public), ttl_s=60, incident_id="9", wav=str(wav),
        now=datetime.now(UTC) - timedelta(seconds=61),
    )  # fmt: skip
    async with http.get(expired) as resp:
        assert resp.status == 404


async def test_tokens_never_reach_the_log(
    store: DbLinkStore, server: HttpServers, http: aiohttp.ClientSession, wav: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    token = await voice_link(store, wav)
    caplog.set_level(logging.DEBUG)
    for path in (f"/v/{token}", f"/v/{token[:-1]}", "/nothing"):
        async with http.get(base(server.public) + path) as resp:
            await resp.read()
    assert any(r.getMessage() == "voice link fetched" for r in caplog.records)
    assert all(token[:-1] not in r.getMessage() + repr(vars(r)) for r in caplog.records)


async def test_migration_0003_goes_down_and_up(db_url: str) -> None:
    assert await upgrade(db_url) == head_revision()
    assert await downgrade(db_url, "0002") == "0002"
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
    finally:
        await engine.dispose()
    assert "links" not in tables
    assert await upgrade(db_url) == head_revision()


async def test_running_server_purges_expired_links(db_url: str, store: DbLinkStore, wav: Path) -> None:
    expired = [await voice_link(store, wav, ttl=timedelta(seconds=-1)) for _ in range(3)]
    live = await voice_link(store, wav)
    servers = await start_http(
        HttpConfig(listen=HostPort("127.0.0.1", 0)), store, None, None, purge_interval_s=0.05
    )
    engine = create_engine(db_url)
    try:
        hashes: set[str] = set()
        for _ in range(100):  # bounded: 100 x 0.02 s
            async with engine.connect() as conn:
                hashes = set((await conn.execute(text("SELECT token_hash FROM links"))).scalars())
            if len(hashes) == 1:
                break
            await asyncio.sleep(0.02)
        assert hashes == {token_hash(live)}
        assert all(token_hash(t) not in hashes for t in expired)
    finally:
        await engine.dispose()
        await servers.close()
