"""Group commit for the incidents' logs: many appends, one transaction.

The runner records every command before carrying it out; one commit per log entry made a surge of
presses wait in line for the database (100 presses = 600 commits before the last INVITE went out;
bench/sos_e2e.py). Here whatever was appended while one commit ran goes into the next, in one
transaction; the order of entries is kept and each caller still returns only once its entry is
durable (or gets the commit's exception).
"""

from __future__ import annotations

import asyncio

from voip_sos.incidents.recording import EventRecord
from voip_sos.incidents.store import IncidentStore

__all__ = ["GroupCommit"]


class GroupCommit:
    """Appends to the incidents' logs, committed in groups (see the module docstring)."""

    def __init__(self, store: IncidentStore) -> None:
        self._store = store
        self._pending: list[tuple[EventRecord, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def append(self, record: EventRecord) -> None:
        await self.submit(record)

    def submit(self, record: EventRecord) -> asyncio.Future[None]:
        """Queue `record` now (its place in the log is taken at once); the future is done when it is
        durable. For a step that may go ahead while its entry is being written."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())
        return done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._store.append_events([record for record, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
