"""What operators see on `/metrics`: one Prometheus registry per process and the calls that move it.

The registry is our own, not prometheus_client's global one, so a test (or a second service in one
process) starts from zero and `/metrics` shows only this service. Every label value that is known
in advance is created at start, so a dashboard sees `0`, not a missing series, before the first
event (`rate()` over a series that appears late misses its first increment). Label values come
from code, never from a peer; anything outside the expected shape is counted as `other` so a bug
cannot grow the number of series without bound.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from voip_sos.sos.listener import DROP_REASONS

__all__ = ["CALL_RESULTS", "GC_PROCESSES", "INCIDENT_OUTCOMES", "PREFIX", "SMS_RESULTS", "Metrics"]

PREFIX = "voip_sos"
INCIDENT_OUTCOMES = ("reached", "unreached", "false_alarm")
CALL_RESULTS = ("confirmed", "unconfirmed", "busy", "no_answer", "failed", "cancelled")
SMS_RESULTS = ("accepted", "failed")
GC_PROCESSES = ("serve", "listener")
OTHER = "other"
_LABEL_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _label(value: str) -> str:
    return value if _LABEL_RE.match(value) else OTHER


class Metrics:
    """The service's metrics. Each method is cheap and never raises: the runner calls them inline."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._open = Gauge(f"{PREFIX}_incidents_open", "Incidents open now", registry=r)
        self._opened = Counter(f"{PREFIX}_incidents_opened", "Incidents opened", registry=r)
        self._closed = Counter(
            f"{PREFIX}_incidents_closed",
            "Incidents closed, by outcome (reached = someone pressed 1)",
            ["outcome"],
            registry=r,
        )
        self._calls = Counter(f"{PREFIX}_calls", "Call attempts ended, by result", ["result"], registry=r)
        self._sms = Counter(
            f"{PREFIX}_sms",
            "Emergency texts, by result (accepted = 202/200, not delivered)",
            ["result"],
            registry=r,
        )
        self._registered = Gauge(
            f"{PREFIX}_pbx_registered", "1 while the registration with the PBX is valid, else 0", registry=r
        )
        self._render_queue = Gauge(
            f"{PREFIX}_render_queue_length", "Voice messages waiting to be rendered", registry=r
        )
        self._receipt = Histogram(
            f"{PREFIX}_sos_receipt_seconds",
            "From an SOS request's arrival to its RECEIPT (recorded durably), first answers only",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self._gc_pause = Histogram(
            f"{PREFIX}_gc_pause_seconds",
            "Garbage-collector pauses (every thread of the process stops), by process and generation",
            ["process", "generation"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
            registry=r,
        )
        self._rejected = Counter(
            f"{PREFIX}_sos_rejected", "SOS datagrams dropped or refused, by reason", ["reason"], registry=r
        )
        self._open_now = 0
        self._rejected_seen: dict[str, int] = {}
        for outcome in INCIDENT_OUTCOMES:
            self._closed.labels(outcome)
        for result in CALL_RESULTS:
            self._calls.labels(result)
        for result in SMS_RESULTS:
            self._sms.labels(result)
        for reason in DROP_REASONS:
            self._rejected.labels(reason)
        for process in GC_PROCESSES:
            for generation in ("0", "1", "2"):
                self._gc_pause.labels(process, generation)

    def incident_opened(self) -> None:
        """A new incident, or an open one taken over after a restart."""
        self._open_now += 1
        self._open.set(self._open_now)
        self._opened.inc()

    def incident_closed(self, outcome: str) -> None:
        """`outcome`: reached, unreached or false_alarm."""
        # Never below zero, even if a close is reported for an incident this process did not open.
        self._open_now = max(0, self._open_now - 1)
        self._open.set(self._open_now)
        self._closed.labels(_label(outcome)).inc()

    def call_ended(self, result: str) -> None:
        """One call attempt ended: confirmed, unconfirmed, busy, no_answer, failed or cancelled."""
        self._calls.labels(_label(result)).inc()

    def sms_sent(self, result: str) -> None:
        """One text handed to the transport: accepted or failed."""
        self._sms.labels(_label(result)).inc()

    def registration(self, ok: bool) -> None:
        self._registered.set(1 if ok else 0)

    def render_queue(self, n: int) -> None:
        self._render_queue.set(n)

    def sos_receipt(self, seconds: float) -> None:
        self._receipt.observe(seconds)

    def gc_pause(self, process: str, generation: int, seconds: float) -> None:
        """One collection of `process` (serve or listener) took `seconds`."""
        gen = str(generation) if generation in (0, 1, 2) else OTHER
        self._gc_pause.labels(process if process in GC_PROCESSES else OTHER, gen).observe(seconds)

    def sos_rejected(self, reason: str, n: int = 1) -> None:
        """`n` SOS datagrams dropped or refused for `reason` (the listener's DROP_REASONS)."""
        if n > 0:
            self._rejected.labels(_label(reason)).inc(n)

    def sync_sos_rejected(self, totals: Mapping[str, int]) -> None:
        """Catch up with the SOS listener's running totals (`SosListener.counters`): adds the growth
        since the last call, so the listener keeps one set of counts and this can run at any rate."""
        for reason, total in totals.items():
            grown = total - self._rejected_seen.get(reason, 0)
            self._rejected_seen[reason] = total
            self.sos_rejected(reason, grown)
