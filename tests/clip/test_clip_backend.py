"""The backend's clip side over real loopback HTTP: the resumable upload endpoint and its grants,
storage and the incident log, the family's clip URL (404 for any wrong key), retention; and the
hub's uploader resuming through a TCP proxy that breaks the connection mid-upload."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from tests.clip.conftest import ClipSite
from voip_sos.clips.archive import CLIP_DELETED, CLIP_STORED
from voip_sos.hub.clip.cut import ClipFile
from voip_sos.hub.clip.upload import UploadFailed, upload_clip
from voip_sos.web import Link
from voip_sos.web.server import NOT_FOUND_TEXT


def clip_file(path: Path, *, duration_s: float = 3.0, end: float = 1_795_000_000.0) -> tuple[ClipFile, bytes]:
    """The hub's description of the file at `path` (a 3 s clip with one gap), and its bytes."""
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    return ClipFile(
        str(path), len(data), duration_s, end - duration_s, end, sha, ((end - 2.0, end - 1.5),)
    ), data


def facts(clip: ClipFile, offset: int, token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Upload-Offset": str(offset),
        "Upload-Length": str(clip.bytes),
        "Clip-Sha256": clip.sha256,
        "Clip-Duration": str(clip.duration_s),
        "Clip-Start": str(clip.start),
        "Clip-End": str(clip.end),
        "Clip-Gaps": json.dumps([list(g) for g in clip.gaps]),
    }


async def test_upload_in_two_parts_then_the_family_plays_it(any_site: ClipSite, sample_mp4: Path) -> None:
    site = any_site
    incident = await site.open_incident(1)
    grant = await site.grant(incident)
    assert grant.url == f"{site.base}/hub/v1/clips/{incident}"
    clip, data = clip_file(sample_mp4)
    url = grant.url + "/hall/recent"
    half = len(data) // 2
    async with aiohttp.ClientSession() as http:
        async with http.head(url, headers={"Authorization": f"Bearer {grant.token}"}) as resp:
            assert resp.status == 204 and resp.headers["Upload-Offset"] == "0"
        async with http.patch(url, data=data[:half], headers=facts(clip, 0, grant.token)) as resp:
            assert resp.status == 204, await resp.text()
            assert resp.headers["Upload-Offset"] == str(half) and resp.headers["Upload-Complete"] == "?0"
        async with http.head(url, headers={"Authorization": f"Bearer {grant.token}"}) as resp:
            assert resp.headers["Upload-Offset"] == str(half)
            assert resp.headers["Upload-Length"] == str(len(data))
        assert await site.archive.for_incident(incident) == []  # not listed until complete
        async with http.patch(url, data=data[half:], headers=facts(clip, half, grant.token)) as resp:
            assert resp.status == 201, await resp.text()
            body = await resp.json()
        assert body["bytes"] == len(data) and body["camera"] == "hall" and body["part"] == "recent"
        # Sending it again changes nothing: it is stored.
        async with http.patch(url, data=data, headers=facts(clip, 0, grant.token)) as resp:
            assert resp.status == 200 and resp.headers["Upload-Complete"] == "?1"

        [stored] = await site.archive.for_incident(incident)
        assert stored.bytes == len(data) and stored.sha256 == clip.sha256 and stored.hub_id == "hub-a"
        [event] = await site.events(incident, CLIP_STORED)
        assert event.detail["bytes"] == len(data) and event.detail["duration_s"] == 3.0
        assert event.detail["camera"] == "hall" and event.detail["hub"] == "hub-a"
        assert len(event.detail["gaps"]) == 1

        page = await site.family(incident)
        async with http.get(page + "/state") as resp:
            state = await resp.json()
        [listed] = state["clips"]
        assert listed["camera"] == "hall" and listed["part"] == "recent" and listed["duration_s"] == 3.0
        assert any(s["step"] == "clip" for s in state["timeline"])
        async with http.get(f"{page}/clip/{listed['id']}") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
            assert await resp.read() == data
        async with http.get(f"{page}/clip/{listed['id']}", headers={"Range": "bytes=100-199"}) as resp:
            assert resp.status == 206 and await resp.read() == data[100:200]


async def test_uploads_without_the_incidents_grant_are_refused(site: ClipSite, sample_mp4: Path) -> None:
    mine, theirs = await site.open_incident(1), await site.open_incident(2)
    grant_mine = await site.grant(mine, hub="hub-a")
    grant_theirs = await site.grant(theirs, hub="hub-b")
    expired = await site.grant(mine, hub="hub-a", ttl_s=60, now=datetime.now(UTC) - timedelta(hours=1))
    family_token = (await site.family(mine)).rsplit("/", 1)[1]
    clip, data = clip_file(sample_mp4)
    url = f"{site.base}/hub/v1/clips/{mine}/hall/full"
    async with aiohttp.ClientSession() as http:

        async def send(token: str | None, target: str = url, **extra: str) -> aiohttp.ClientResponse:
            headers = facts(clip, 0, token or "")
            if token is None:
                del headers["Authorization"]
            headers.update(extra)
            async with http.patch(target, data=data, headers=headers) as resp:
                await resp.read()
                return resp

        assert (await send(None)).status == 401
        assert (await send("not-a-token")).status == 401
        assert (await send("A" * 22)).status == 401  # well-formed, unknown
        assert (await send(expired.token)).status == 401
        assert (await send(family_token)).status == 401  # a family link is no upload grant
        # hub-b's grant (its own incident) on hub-a's incident: refused, and nothing stored.
        resp = await send(grant_theirs.token)
        assert resp.status == 403
        assert await site.archive.find(mine, "hall", "full") is None
        async with http.head(url, headers={"Authorization": f"Bearer {grant_theirs.token}"}) as head:
            assert head.status == 403
        # Malformed requests name the header.
        async with http.patch(
            url, data=data, headers={**facts(clip, 0, grant_mine.token), "Clip-Sha256": "xyz"}
        ) as r:
            assert r.status == 400 and "Clip-Sha256" in (await r.json())["error"]
        async with http.patch(
            url, data=data, headers={**facts(clip, 0, grant_mine.token), "Upload-Offset": "-1"}
        ) as r:
            assert r.status == 400 and "Upload-Offset" in (await r.json())["error"]
        assert (await send(grant_mine.token, f"{site.base}/hub/v1/clips/{mine}/hall/other")).status == 404
        assert (await send(grant_mine.token, f"{site.base}/hub/v1/clips/{mine}/Hall!/full")).status == 404
        # The right grant works.
        assert (await send(grant_mine.token)).status == 201
        assert (await site.archive.find(mine, "hall", "full")) is not None
        assert await site.archive.for_incident(theirs) == []


async def test_offset_mismatch_and_corrupt_upload(site: ClipSite, sample_mp4: Path) -> None:
    incident = await site.open_incident(3)
    grant = await site.grant(incident)
    clip, data = clip_file(sample_mp4)
    url = grant.url + "/door/recent"
    async with aiohttp.ClientSession() as http:
        async with http.patch(url, data=data[:1000], headers=facts(clip, 0, grant.token)) as resp:
            assert resp.status == 204
        async with http.patch(url, data=data[5000:], headers=facts(clip, 5000, grant.token)) as resp:
            assert resp.status == 409 and resp.headers["Upload-Offset"] == "1000"
        # The rest, but one byte flipped: the SHA-256 does not match, nothing is stored.
        rest = bytearray(data[1000:])
        rest[-1] ^= 0xFF
        async with http.patch(url, data=bytes(rest), headers=facts(clip, 1000, grant.token)) as resp:
            assert resp.status == 422
        assert await site.archive.for_incident(incident) == []
        async with http.head(url, headers={"Authorization": f"Bearer {grant.token}"}) as resp:
            assert resp.headers["Upload-Offset"] == "0"
        # More bytes than announced: refused.
        async with http.patch(url, data=data + b"x", headers=facts(clip, 0, grant.token)) as resp:
            assert resp.status == 413
        await site.archive.storage.discard(f"{incident}/door-recent.mp4")
        async with http.patch(url, data=data, headers=facts(clip, 0, grant.token)) as resp:
            assert resp.status == 201
    assert len(await site.archive.for_incident(incident)) == 1


async def test_a_clip_opens_only_with_its_incidents_family_token(site: ClipSite, sample_mp4: Path) -> None:
    a, b = await site.open_incident(4), await site.open_incident(5)
    grant = await site.grant(a)
    clip, data = clip_file(sample_mp4)
    async with aiohttp.ClientSession() as http:
        async with http.patch(grant.url + "/hall/full", data=data,
                              headers=facts(clip, 0, grant.token)) as resp:  # fmt: skip
            clip_id = (await resp.json())["clip"]
        page_a, page_b = await site.family(a), await site.family(b)
        expired_token = await site.links.create(
            Link(str(a), "family", "contact:0", datetime.now(UTC) - timedelta(seconds=1))
        )
        voice_token = await site.links.create(
            Link(str(a), "voice", str(sample_mp4), datetime.now(UTC) + timedelta(hours=1))
        )
        async with http.get(f"{page_a}/clip/{clip_id}") as resp:
            assert resp.status == 200
        for url in (
            f"{page_b}/clip/{clip_id}",  # another incident's family
            f"{site.base}/f/{expired_token}/clip/{clip_id}",
            f"{site.base}/f/{voice_token}/clip/{clip_id}",
            f"{site.base}/f/{'B' * 22}/clip/{clip_id}",
            f"{site.base}/f/short/clip/{clip_id}",
            f"{page_a}/clip/{clip_id + 1000}",
            f"{page_a}/clip/x",
            f"{site.base}/clips/{a}/hall-full.mp4",  # the storage is never served directly
        ):
            async with http.get(url) as resp:
                assert resp.status == 404, url
                assert await resp.text() == NOT_FOUND_TEXT


async def test_retention_deletes_old_clips_and_abandoned_uploads(site: ClipSite, sample_mp4: Path) -> None:
    incident = await site.open_incident(6)
    grant = await site.grant(incident)
    clip, data = clip_file(sample_mp4)
    async with aiohttp.ClientSession() as http:
        async with http.patch(
            grant.url + "/hall/full", data=data, headers=facts(clip, 0, grant.token)
        ) as resp:
            clip_id = (await resp.json())["clip"]
        async with http.patch(
            grant.url + "/yard/full", data=data[:10], headers=facts(clip, 0, grant.token)
        ) as r:
            assert r.status == 204
        page = await site.family(incident)
        stored = site.clip_dir / str(incident) / "hall-full.mp4"
        assert stored.exists() and (site.clip_dir / str(incident) / "yard-full.mp4.part").exists()

        assert await site.archive.purge(datetime.now(UTC)) == 0  # nothing old yet
        later = datetime.now(UTC) + timedelta(seconds=site.archive.retention_s + 1)
        assert await site.archive.purge(later) == 2
        assert not stored.exists() and not (site.clip_dir / str(incident) / "yard-full.mp4.part").exists()
        assert await site.archive.get(clip_id) is None
        [deleted] = await site.events(incident, CLIP_DELETED)
        assert deleted.detail == {"clip": clip_id, "camera": "hall", "part": "full", "reason": "retention"}
        async with http.get(f"{page}/clip/{clip_id}") as resp:
            assert resp.status == 404
        async with http.get(page + "/state") as resp:
            state = await resp.json()
        assert state["clips"] == [] and any(s["step"] == "clip_deleted" for s in state["timeline"])


class CuttingProxy:
    """TCP proxy to the backend that closes the first connection after `cut_after` bytes from the
    client (trickled, like a slow uplink), and records the Upload-Offset of every PATCH it forwards."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.connections = 0
        self.offsets: list[int] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        limit = self.cut_after if self.connections == 1 else None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            sent = 0
            with contextlib.suppress(ConnectionError):
                while chunk := await src.read(65536):
                    if count:
                        for m in re.finditer(rb"PATCH [^\r]*\r\n(?:[^\r]+\r\n)*?Upload-Offset: (\d+)", chunk):
                            self.offsets.append(int(m.group(1)))
                        if limit is not None and sent + len(chunk) > limit:
                            dst.write(chunk[: limit - sent])
                            await dst.drain()
                            # The link dies a moment after the last bytes got through (as on a real
                            # uplink, where the backend reads them as they arrive).
                            await asyncio.sleep(0.3)
                            break
                        sent += len(chunk)
                    dst.write(chunk)
                    await dst.drain()
                    if limit is not None:
                        await asyncio.sleep(0.002)  # a slow uplink: the backend reads as it comes
            for w in (dst, writer, up_writer):
                w.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))


async def test_hub_uploader_resumes_after_the_connection_breaks(site: ClipSite, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    big.write_bytes(bytes(range(256)) * 2000)  # 512 kB: the bytes need not be video for the protocol
    clip, data = clip_file(big)
    incident = await site.open_incident(7)
    grant = await site.grant(incident)
    port = int(site.base.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cut_after=200_000)
    proxy_port = await proxy.start()
    url = f"http://127.0.0.1:{proxy_port}/hub/v1/clips/{incident}/hall/full"
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(UploadFailed):
                await upload_clip(http, url, grant.token, clip)
            result = await upload_clip(http, url, grant.token, clip)
    finally:
        await proxy.close()
    assert result["bytes"] == clip.bytes
    # The second attempt went on from where the backend's copy ended, not from 0.
    assert proxy.offsets[0] == 0 and len(proxy.offsets) == 2 and 0 < proxy.offsets[1] < clip.bytes
    [stored] = await site.archive.for_incident(incident)
    assert stored.sha256 == clip.sha256
    assert (site.clip_dir / str(incident) / "hall-full.mp4").read_bytes() == data
