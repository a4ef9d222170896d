"""Which backend runs which open incident, when several share one database (migration 0007).

A backend holds the incidents it runs (`IncidentStore.hold`) and renews the hold every third of
`emergency.takeover_s`; an incident whose backend stopped renewing (it died) is taken over by one
that lives (`IncidentStore.take_over`) and resumed as after a restart. One that finds on renewing
that its incident was taken over (it stalled longer than `takeover_s`) stops running it. The
runner says what it runs, how to let one go and how to resume one; this module keeps the rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta

from voip_sos.config import SosConfig
from voip_sos.incidents.store import Incident, IncidentStore
from voip_sos.logs import bind

__all__ = ["IncidentHolds", "backend_id"]

logger = logging.getLogger(__name__)


def backend_id(sos: SosConfig) -> str:
    """This backend's name among those sharing a database: `sos.backend_id`, else host name and
    SOS port (stable across restarts, so a restarted backend takes its own incidents back at once)."""
    return sos.backend_id or f"{socket.gethostname()}:{sos.listen.port or os.getpid()}"


class IncidentHolds:
    def __init__(
        self,
        store: IncidentStore,
        runner_id: str,
        takeover_s: float,
        running: Callable[[], Collection[int]],
        let_go: Callable[[int, str | None], None],
        resume: Callable[[Incident], Awaitable[bool]],
    ) -> None:
        self._store = store
        self.runner_id = runner_id
        self._takeover = timedelta(seconds=takeover_s)
        self._running, self._let_go, self._resume = running, let_go, resume
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep(), name="incident-holds")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def until(self, now: datetime) -> datetime:
        return now + self._takeover

    async def claimable(self, now: datetime) -> list[Incident]:
        """At start: this backend's own open incidents, those whose backend stopped renewing and
        those nobody took; never one another live backend runs."""
        return await self._store.take_over(
            self.runner_id, now, self.until(now), unclaimed_before=now - self._takeover, own=True
        )

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self._takeover.total_seconds() / 3)
            try:
                await self.round()
            except Exception as exc:
                # The database is away: the holds run out only after takeover_s, and the next
                # round tries again. Another backend that can reach it takes over after that.
                logger.warning("renewing incident holds failed", extra={"error": str(exc)})

    async def round(self) -> int:
        """Renew the holds, then resume what gone backends left; how many were taken over."""
        await self._renew()
        now = datetime.now(UTC)
        taken = await self._store.take_over(
            self.runner_id, now, self.until(now), unclaimed_before=now - self._takeover, own=False
        )
        resumed = 0
        for inc in taken:
            if inc.id in self._running():
                continue
            bind(logger, incident=inc.id, uid=inc.uid).warning(
                "taking over an incident whose backend stopped renewing its hold"
            )
            try:
                resumed += await self._resume(inc)
            except Exception:
                logger.exception("taking over an incident failed", extra={"incident": inc.id})
        return resumed

    async def _renew(self) -> None:
        ids = sorted(self._running())
        held = await self._store.hold(self.runner_id, ids, self.until(datetime.now(UTC)))
        for incident_id in set(ids) - held:
            if incident_id in self._running():
                runner, _ = await self._store.runner_of(incident_id)
                self._let_go(incident_id, runner)
