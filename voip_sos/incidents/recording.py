"""Writing incidents: the SQL that records SOS requests and appends to the log, as plain sync Core.

One implementation for both databases: `IncidentStore` runs it inside `AsyncConnection.run_sync`
(PostgreSQL), or on a dedicated thread with its own sqlite3 connection (SQLite), where a whole
batch then costs one thread hop instead of one per statement.

Dedup never relies on memory: `INSERT … ON CONFLICT DO NOTHING RETURNING` against the unique request
id and the partial unique "one open incident per STB" index lets the database decide, so backends
sharing PostgreSQL, racing on the same press, agree on one incident.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from voip_sos.directory.models import stbs
from voip_sos.directory.records import Subscriber
from voip_sos.directory.schema import sqlite_time
from voip_sos.incidents.tables import incident_events, incidents

__all__ = ["SQLITE_APPEND", "EventRecord", "Recorded", "Recorder", "RequestRecord", "sqlite_append_payload"]

# Kinds of request the listener records; the event kind written for each.
_REQUEST_EVENT = {"sos": "sos_received", "cancel": "cancel_received", "update": "update_received"}
_RACE_RETRIES = 3


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """An authenticated request to record."""

    kind: str
    """sos, cancel, update or heartbeat."""
    request_id: bytes
    """The STB's 128-bit request id."""
    stb_ip: str
    """The STB."""
    uid: str
    """Its subscriber."""
    at: datetime
    """When it arrived (aware UTC)."""
    test: bool = False
    """SOS with the TEST flag."""
    detail: dict[str, Any] = field(default_factory=dict)
    """What else goes into the log entry (sequence number, STB time, source, door code …)."""
    lookup: dict[str, Any] = field(default_factory=dict)
    """The directory's answer (uid, name, address …): logged when this request opens the incident."""
    subscriber: Subscriber | None = field(default=None, compare=False, repr=False)
    """The record the listener looked up, so the incident starts without asking the directory again."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording a request did."""

    incident_id: int | None
    """The incident it belongs to; None: CANCEL/UPDATE with no open incident (nothing recorded)."""
    again: bool = False
    """The request id had been recorded before: a retransmission or replay; nothing started."""
    opened: bool = False
    """This SOS opened the incident (False: it joined an open one)."""
    closed: bool = False
    """This CANCEL closed the incident."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A step to append to an incident's log."""

    incident_id: int
    kind: str
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


def _naive(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _json(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)


# The batch's set statements on SQLite (see Recorder._prior_requests). `WHERE true` keeps SQLite's
# parser from reading the upsert's ON as a join constraint.
_SQLITE_PRIOR = (
    "SELECT request_id, incident_id FROM incident_events WHERE request_id IN (SELECT value FROM json_each(?))"
)
_SQLITE_OPEN_OF = (
    "SELECT stb_ip, id, test FROM incidents "
    "WHERE closed_at IS NULL AND stb_ip IN (SELECT value FROM json_each(?))"
)
_SQLITE_OPEN = (
    "INSERT INTO incidents (stb_ip, uid, test, state, opened_at, opened_by) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
    "json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]') "
    "FROM json_each(?) WHERE true ON CONFLICT DO NOTHING RETURNING stb_ip, id"
)
_SQLITE_LOG_REQUESTS = (
    "INSERT INTO incident_events (incident_id, at, kind, request_id, detail) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
    "json_extract(value, '$[3]'), json_extract(value, '$[4]') "
    "FROM json_each(?) WHERE true ON CONFLICT DO NOTHING RETURNING request_id"
)

# SQLite: a whole batch of log entries in one statement. sqlite3 re-takes the GIL between the rows
# of an executemany; in a busy `serve` every re-take can wait a GIL switch interval while this
# connection holds the database's write lock, so the SOS listener's next commit (another process)
# waited hundreds of ms behind a batch of log lines. One statement, one step: the lock is held for
# the time SQLite needs, not for the time the GIL takes to come back hundreds of times.
SQLITE_APPEND = (
    "INSERT INTO incident_events (incident_id, at, kind, detail) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
    "json_extract(value, '$[3]') FROM json_each(?)"
)


def sqlite_append_payload(events: Sequence[EventRecord]) -> str:
    """The JSON parameter of the one-statement append (built before the write lock is taken)."""
    return json.dumps(
        [[e.incident_id, sqlite_time(_naive(e.at)), e.kind, _json(e.detail)] for e in events],
        ensure_ascii=False,
    )


class Recorder:
    """The write statements, for one dialect ("sqlite" or "postgresql")."""

    def __init__(self, dialect: str) -> None:
        self._insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._sqlite = dialect == "sqlite"

    def record(
        self, conn: Connection, items: Sequence[RequestRecord], events: Sequence[EventRecord]
    ) -> list[Recorded]:
        """Record requests (and pending log entries) on `conn`, inside the caller's transaction."""
        if events:
            self._append(conn, events)
        return self._record_batch(conn, items)

    def append(self, conn: Connection, events: Sequence[EventRecord]) -> None:
        if events:
            self._append(conn, events)

    def close(
        self,
        conn: Connection,
        incident_id: int,
        at: datetime,
        reason: str,
        state: str,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        return self._close(conn, incident_id, at, reason, state, detail or {})

    def _append(self, conn: Connection, events: Sequence[EventRecord]) -> None:
        if self._sqlite:
            conn.exec_driver_sql(SQLITE_APPEND, (sqlite_append_payload(events),))
            return
        conn.execute(
            insert(incident_events),
            [
                {"incident_id": e.incident_id, "at": _naive(e.at), "kind": e.kind, "detail": _json(e.detail)}
                for e in events
            ],
        )

    def _record_batch(self, conn: Connection, items: Sequence[RequestRecord]) -> list[Recorded]:
        """A handful of set-based statements for the whole batch, whatever its size.

        The fast path takes SOS and UPDATE requests of STBs that appear once in the batch; anything
        else (CANCEL, several requests of one STB, a race lost to another backend) goes through
        `_record_one` in arrival order, which is exact but costs a few statements per request.
        """
        results: list[Recorded | None] = [None] * len(items)
        beats = [i for i, it in enumerate(items) if it.kind == "heartbeat"]
        others = [i for i, it in enumerate(items) if it.kind != "heartbeat"]
        if beats:
            conn.execute(
                update(stbs).where(stbs.c.ip == bindparam("b_ip")).values(last_seen_at=bindparam("b_at")),
                [{"b_ip": items[i].stb_ip, "b_at": _naive(items[i].at)} for i in beats],
            )
        rids = [items[i].request_id.hex() for i in others]
        prior: dict[str, int] = {}
        if rids:
            prior = {r[0]: r[1] for r in self._prior_requests(conn, rids)}
        ips = sorted({it.stb_ip for it in items})
        open_rows = self._open_of(conn, ips)
        open_ids: dict[str, int] = {r[0]: r[1] for r in open_rows}
        open_tests = {r[0] for r in open_rows if r[2]}
        per_ip: dict[str, int] = {}
        for i in others:
            per_ip[items[i].stb_ip] = per_ip.get(items[i].stb_ip, 0) + 1
        fast: list[int] = []
        slow: list[int] = []
        for i in others:
            it = items[i]
            if it.request_id.hex() in prior and per_ip[it.stb_ip] == 1:
                results[i] = Recorded(prior[it.request_id.hex()], again=True)
            elif it.kind == "sos" and not it.test and it.stb_ip in open_tests:
                slow.append(i)  # a real emergency during a test: see _record_one
            elif it.kind in ("sos", "update") and per_ip[it.stb_ip] == 1:
                fast.append(i)
            else:
                slow.append(i)
        to_open = [i for i in fast if items[i].kind == "sos" and items[i].stb_ip not in open_ids]
        opened: dict[str, int] = {}
        if to_open:
            rows = [
                {
                    "stb_ip": items[i].stb_ip,
                    "uid": items[i].uid,
                    "test": items[i].test,
                    "state": "open",
                    "opened_at": _naive(items[i].at),
                    "opened_by": items[i].request_id.hex(),
                }
                for i in to_open
            ]
            opened = {r[0]: r[1] for r in self._open_incidents(conn, rows)}
        logged: list[tuple[int, int, bool]] = []
        for i in fast:
            it = items[i]
            if it.stb_ip in opened:
                logged.append((i, opened[it.stb_ip], True))
            elif it.stb_ip in open_ids:
                logged.append((i, open_ids[it.stb_ip], False))
            elif it.kind == "update":
                results[i] = Recorded(None)
            else:
                slow.append(i)  # another backend opened one just now
        if logged:
            rows = [
                {
                    "incident_id": incident_id,
                    "at": _naive(items[i].at),
                    "kind": _REQUEST_EVENT[items[i].kind],
                    "request_id": items[i].request_id.hex(),
                    "detail": _json(self._request_detail(items[i], opened=was_opened)),
                }
                for i, incident_id, was_opened in logged
            ]
            done = {r[0] for r in self._log_requests(conn, rows)}
            opened_events = []
            for i, incident_id, was_opened in logged:
                if items[i].request_id.hex() not in done:
                    slow.append(i)  # another backend recorded this very request
                    continue
                results[i] = Recorded(incident_id, opened=was_opened)
                if was_opened:
                    opened_events.append(
                        EventRecord(
                            incident_id,
                            "incident_opened",
                            items[i].at,
                            {"uid": items[i].uid, **items[i].lookup},
                        )
                    )
            if opened_events:
                self._append(conn, opened_events)
        for i in sorted(slow):
            results[i] = self._record_one(conn, items[i])
        # Heartbeats last, so one sharing a batch with its STB's SOS or CANCEL names the outcome.
        changed = {items[i].stb_ip for i in slow}
        for i in beats:
            ip = items[i].stb_ip
            known = opened.get(ip, open_ids.get(ip))
            current = self._open_incident(conn, ip) if ip in changed else known
            results[i] = Recorded(current or 0)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    # The set statements of a batch. On SQLite each is one statement over a JSON parameter: SQLAlchemy
    # compiles a multi-row VALUES or an IN list anew for every batch size (~0.3 ms a row, measured),
    # and that time is spent holding the write lock while a surge waits for its RECEIPTs.

    def _prior_requests(self, conn: Connection, rids: list[str]) -> Sequence[Any]:
        if self._sqlite:
            return conn.exec_driver_sql(_SQLITE_PRIOR, (json.dumps(rids),)).all()
        q = select(incident_events.c.request_id, incident_events.c.incident_id).where(
            incident_events.c.request_id.in_(rids)
        )
        return conn.execute(q).all()

    def _open_of(self, conn: Connection, ips: list[str]) -> Sequence[Any]:
        if self._sqlite:
            return conn.exec_driver_sql(_SQLITE_OPEN_OF, (json.dumps(ips),)).all()
        q = select(incidents.c.stb_ip, incidents.c.id, incidents.c.test).where(
            incidents.c.closed_at.is_(None), incidents.c.stb_ip.in_(ips)
        )
        return conn.execute(q).all()

    def _open_incidents(self, conn: Connection, rows: list[dict[str, Any]]) -> Sequence[Any]:
        """Insert incident rows, skipping those another backend opened first; (stb_ip, id) of the new."""
        if self._sqlite:
            payload = [
                [r["stb_ip"], r["uid"], int(r["test"]), r["state"], sqlite_time(r["opened_at"]),
                 r["opened_by"]]
                for r in rows
            ]  # fmt: skip
            return conn.exec_driver_sql(_SQLITE_OPEN, (json.dumps(payload, ensure_ascii=False),)).all()
        stmt = self._insert(incidents).values(rows).on_conflict_do_nothing()
        return conn.execute(stmt.returning(incidents.c.stb_ip, incidents.c.id)).all()

    def _log_requests(self, conn: Connection, rows: list[dict[str, Any]]) -> Sequence[Any]:
        """Insert request log rows, skipping request ids already recorded; (request_id,) of the new."""
        if self._sqlite:
            payload = [
                [r["incident_id"], sqlite_time(r["at"]), r["kind"], r["request_id"], r["detail"]]
                for r in rows
            ]
            param = json.dumps(payload, ensure_ascii=False)
            return conn.exec_driver_sql(_SQLITE_LOG_REQUESTS, (param,)).all()
        stmt = self._insert(incident_events).values(rows).on_conflict_do_nothing()
        return conn.execute(stmt.returning(incident_events.c.request_id)).all()

    @staticmethod
    def _request_detail(item: RequestRecord, *, opened: bool) -> dict[str, Any]:
        detail = {**item.detail, "uid": item.uid}
        if item.kind == "sos":
            detail |= {"test": item.test, "joined": not opened}
        return detail

    def _record_one(self, conn: Connection, item: RequestRecord) -> Recorded:
        if item.kind == "heartbeat":
            conn.execute(update(stbs).where(stbs.c.ip == item.stb_ip).values(last_seen_at=_naive(item.at)))
            return Recorded(self._open_incident(conn, item.stb_ip) or 0)
        for _ in range(_RACE_RETRIES):
            prior = self._incident_of_request(conn, item.request_id)
            if prior is not None:
                return Recorded(prior, again=True)
            open_id = self._open_incident(conn, item.stb_ip)
            if open_id is not None and item.kind == "sos" and not item.test and self._is_test(conn, open_id):
                # A real press must never join a test incident (which calls only the test number):
                # the test is closed and the emergency gets an incident of its own.
                self._close(conn, open_id, item.at, "superseded_by_real_sos", "closed", {})
                open_id = None
            opened = False
            if item.kind == "sos" and open_id is None:
                open_id = self._try_open(conn, item)
                opened = open_id is not None
                if open_id is None:
                    continue  # another backend opened one just now: join it on the next pass
            if open_id is None:
                return Recorded(None)
            detail = self._request_detail(item, opened=opened)
            if not self._try_log_request(conn, open_id, item, detail):
                continue  # another backend recorded this very request: answer as a replay
            if opened:
                self._append(
                    conn, [EventRecord(open_id, "incident_opened", item.at, {"uid": item.uid, **item.lookup})]
                )
            if item.kind == "cancel":
                closed = self._close(conn, open_id, item.at, "false_alarm", "cancelled", {})
                return Recorded(open_id, closed=closed)
            return Recorded(open_id, opened=opened)
        raise RuntimeError(f"request {item.request_id.hex()} kept racing with another backend")

    def _incident_of_request(self, conn: Connection, request_id: bytes) -> int | None:
        q = select(incident_events.c.incident_id).where(incident_events.c.request_id == request_id.hex())
        return (conn.execute(q)).scalar_one_or_none()

    def _is_test(self, conn: Connection, incident_id: int) -> bool:
        return bool(conn.execute(select(incidents.c.test).where(incidents.c.id == incident_id)).scalar_one())

    def _open_incident(self, conn: Connection, stb_ip: str) -> int | None:
        q = select(incidents.c.id).where(incidents.c.stb_ip == stb_ip, incidents.c.closed_at.is_(None))
        return (conn.execute(q)).scalar_one_or_none()

    def _try_open(self, conn: Connection, item: RequestRecord) -> int | None:
        stmt = (
            self._insert(incidents)
            .values(
                stb_ip=item.stb_ip,
                uid=item.uid,
                test=item.test,
                state="open",
                opened_at=_naive(item.at),
                opened_by=item.request_id.hex(),
            )
            .on_conflict_do_nothing()
            .returning(incidents.c.id)
        )
        return (conn.execute(stmt)).scalar_one_or_none()

    def _try_log_request(
        self, conn: Connection, incident_id: int, item: RequestRecord, detail: dict[str, Any]
    ) -> bool:
        stmt = (
            self._insert(incident_events)
            .values(
                incident_id=incident_id,
                at=_naive(item.at),
                kind=_REQUEST_EVENT[item.kind],
                request_id=item.request_id.hex(),
                detail=_json(detail),
            )
            .on_conflict_do_nothing()
            .returning(incident_events.c.id)
        )
        return (conn.execute(stmt)).scalar_one_or_none() is not None

    def _close(
        self,
        conn: Connection,
        incident_id: int,
        at: datetime,
        reason: str,
        state: str,
        detail: dict[str, Any],
    ) -> bool:
        result = conn.execute(
            update(incidents)
            .where(incidents.c.id == incident_id, incidents.c.closed_at.is_(None))
            .values(closed_at=_naive(at), state=state, close_reason=reason)
        )
        if not result.rowcount:
            return False
        self._append(
            conn,
            [EventRecord(incident_id, "incident_closed", at, {**detail, "state": state, "reason": reason})],
        )
        return True
