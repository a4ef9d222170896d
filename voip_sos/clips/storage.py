"""Where clip videos live: one small interface, a local folder behind it today.

The interface is what an upload and a playback need, and no more: how much of an upload arrived
(`received`), append the next bytes at that offset (`append`), make a finished upload readable and
say its size and SHA-256 (`finish`), answer a browser's (ranged) GET (`response`), and `delete`.
An object store fits behind it: `append` maps to a multipart upload's parts, `finish` to completing
it, `response` to a redirect to a short-lived presigned URL.

`LocalClipStorage` keeps `<root>/<key>.part` while uploading and `<root>/<key>` once finished
(renamed, so a reader never sees half a clip); file I/O runs off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from io import BufferedWriter
from pathlib import Path
from typing import Protocol

from aiohttp import hdrs, web

__all__ = ["ClipStorage", "LocalClipStorage", "OffsetMismatch", "StoredObject", "TooLarge"]

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")


class OffsetMismatch(Exception):
    """The upload does not continue where the stored bytes end."""

    def __init__(self, have: int) -> None:
        super().__init__(f"upload continues at {have}")
        self.have = have


class TooLarge(Exception):
    """The upload would exceed its size limit."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    size: int
    sha256: str


class ClipStorage(Protocol):
    async def received(self, key: str) -> int:
        """Bytes of the unfinished upload `key` stored so far (0 when none)."""
        ...

    async def append(self, key: str, offset: int, chunks: AsyncIterator[bytes], limit: int) -> int:
        """Store `chunks` at `offset` (which must equal `received(key)`, else OffsetMismatch),
        at most up to `limit` bytes in all (else TooLarge); return the new total. Bytes that
        arrived before the stream broke stay stored (that is what makes resuming work)."""
        ...

    async def finish(self, key: str) -> StoredObject:
        """Make the upload `key` readable; return its size and SHA-256."""
        ...

    async def discard(self, key: str) -> None:
        """Forget an unfinished upload."""
        ...

    async def response(self, key: str, headers: dict[str, str]) -> web.StreamResponse | None:
        """The finished object as an HTTP response (Range honoured), or None when it is gone."""
        ...

    async def delete(self, key: str) -> None:
        """Remove a finished object (and any unfinished upload of it)."""
        ...


class LocalClipStorage:
    """ClipStorage in a folder (`http.clip_dir`)."""

    WRITE_BUFFER = 1 << 20

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not _KEY_RE.match(key) or ".." in key:
            raise ValueError(f"bad storage key {key!r}")
        return self.root / key

    async def received(self, key: str) -> int:
        part = self._path(key).with_name(self._path(key).name + ".part")
        return await asyncio.to_thread(lambda: part.stat().st_size if part.exists() else 0)

    async def append(self, key: str, offset: int, chunks: AsyncIterator[bytes], limit: int) -> int:
        part = self._path(key).with_name(self._path(key).name + ".part")

        def open_at() -> BufferedWriter:
            part.parent.mkdir(parents=True, exist_ok=True)
            return part.open("ab")

        f = await asyncio.to_thread(open_at)
        try:
            have = f.tell()
            if have != offset:
                raise OffsetMismatch(have)
            total = have
            pending: list[bytes] = []
            pending_bytes = 0
            try:
                async for chunk in chunks:
                    if total + len(chunk) > limit:
                        raise TooLarge(f"more than {limit} bytes")
                    pending.append(chunk)
                    pending_bytes += len(chunk)
                    total += len(chunk)
                    if pending_bytes >= self.WRITE_BUFFER:
                        data = b"".join(pending)
                        pending, pending_bytes = [], 0
                        await asyncio.to_thread(f.write, data)
            finally:
                # What arrived before a broken connection is kept: the hub resumes after it.
                if pending:
                    await asyncio.to_thread(f.write, b"".join(pending))
            return total
        finally:
            await asyncio.to_thread(f.close)

    async def finish(self, key: str) -> StoredObject:
        path = self._path(key)
        part = path.with_name(path.name + ".part")

        def run() -> StoredObject:
            digest = hashlib.sha256()
            with part.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            size = part.stat().st_size
            os.replace(part, path)
            return StoredObject(size, digest.hexdigest())

        return await asyncio.to_thread(run)

    async def discard(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.with_name(path.name + ".part").unlink, True)

    async def response(self, key: str, headers: dict[str, str]) -> web.StreamResponse | None:
        path = self._path(key)
        if not await asyncio.to_thread(path.is_file):
            return None
        # FileResponse answers Range / If-Range (206, 416), sets Content-Length and reads off the loop.
        return web.FileResponse(path, headers={hdrs.CONTENT_TYPE: "video/mp4", **headers})

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def run() -> None:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".part").unlink(missing_ok=True)

        await asyncio.to_thread(run)
