"""Hub side of the clip upload: one resumable attempt (HEAD for the offset, PATCH the rest in chunks).

The protocol is the backend's (voip_sos/clips/upload.py, docs/clip.md): `HEAD` says how many bytes
the backend already has, each `PATCH` carries `Upload-Offset`, `Upload-Length` and the clip's facts;
a 409 names the offset to continue from. An attempt that breaks off leaves those bytes on the
backend, so the next attempt (the caller retries with backoff) sends only the rest.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from voip_sos.hub.clip.cut import ClipFile

__all__ = ["CHUNK_BYTES", "UploadFailed", "UploadRefused", "UploadUnauthorized", "upload_clip"]

CHUNK_BYTES = 4 << 20
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)


class UploadFailed(Exception):
    """Worth retrying: the backend is unreachable, broke off, or answered 5xx."""


class UploadUnauthorized(Exception):
    """401: the upload token is unknown or expired; only a new incident context can help."""


class UploadRefused(Exception):
    """The backend will never take this clip (403 another incident's token, 413 too large, 400)."""


def _read(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 300:
        return
    try:
        detail = str((await resp.json(content_type=None)).get("error", ""))
    except (ValueError, AttributeError, aiohttp.ClientError):
        detail = ""
    what = f"HTTP {resp.status}" + (f": {detail}" if detail else "")
    if resp.status == 401:
        raise UploadUnauthorized(what)
    if resp.status in (400, 403, 404, 413):
        raise UploadRefused(what)
    raise UploadFailed(what)


async def upload_clip(session: aiohttp.ClientSession, url: str, token: str, clip: ClipFile, *,
                      chunk_bytes: int = CHUNK_BYTES) -> dict[str, Any]:  # fmt: skip
    """Upload `clip` to `url` (resuming where the backend's copy ends); return the backend's JSON."""
    auth = {"Authorization": f"Bearer {token}"}
    facts = {
        "Upload-Length": str(clip.bytes),
        "Clip-Sha256": clip.sha256,
        "Clip-Duration": f"{clip.duration_s:.3f}",
        "Clip-Start": f"{clip.start:.3f}",
        "Clip-End": f"{clip.end:.3f}",
        "Clip-Gaps": json.dumps([[round(a, 3), round(b, 3)] for a, b in clip.gaps]),
    }
    path = Path(clip.path)
    try:
        async with session.head(url, headers=auth, timeout=TIMEOUT) as resp:
            await _raise_for(resp)
            offset = int(resp.headers.get("Upload-Offset", "0"))
            if resp.headers.get("Upload-Complete") == "?1" and offset == clip.bytes:
                return {"bytes": clip.bytes, "resumed": True}
        if offset > clip.bytes:
            offset = 0  # the backend holds more than this clip: it is another cut; it starts over
        # Bounded: every PATCH moves the offset on, or is a 409 naming where to go on from.
        for _ in range(2 * (clip.bytes // chunk_bytes) + 8):
            size = min(chunk_bytes, clip.bytes - offset)
            body = await asyncio.to_thread(_read, path, offset, size)
            headers = {**auth, **facts, "Upload-Offset": str(offset),
                       "Content-Type": "application/offset+octet-stream"}  # fmt: skip
            async with session.patch(url, data=body, headers=headers, timeout=TIMEOUT) as resp:
                if resp.status == 409 and "Upload-Offset" in resp.headers:
                    offset = int(resp.headers["Upload-Offset"])  # continue where the backend is
                    continue
                if resp.status == 409:
                    raise UploadRefused("the backend already stores a different clip here")
                if resp.status == 422:
                    raise UploadFailed("the backend's copy did not match; sending it again")
                await _raise_for(resp)
                if resp.headers.get("Upload-Complete") == "?1":
                    result: dict[str, Any] = await resp.json(content_type=None)
                    return result
                offset = int(resp.headers.get("Upload-Offset", str(offset + size)))
        raise UploadFailed("the backend did not take the bytes (offset went nowhere)")
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise UploadFailed(f"{type(exc).__name__}: {exc}") from None
