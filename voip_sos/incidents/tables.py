"""The incident tables (SQLAlchemy Core), on the directory's metadata: the same database, one schema.

Uniqueness lives in the database, so several backends sharing it cannot double an incident:
`incident_events.request_id` is unique (a request is recorded once, ever), and a partial unique
index allows one open incident per STB (`closed_at IS NULL`). Times are naive UTC like the
directory's. Migration: voip_sos/directory/migrations/versions/0002_incidents.py.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, ForeignKey, Index, Integer, String, Table, Text

from voip_sos.directory.models import metadata

__all__ = ["incident_events", "incidents"]

# BIGINT on PostgreSQL; INTEGER on SQLite so the id is the rowid (auto-increment there needs it).
_ID = BigInteger().with_variant(Integer(), "sqlite")

incidents = Table(
    "incidents",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("stb_ip", String(45), nullable=False),
    # No foreign key: the audit record outlives a subscriber who is later removed.
    Column("uid", String(64), nullable=False),
    Column("test", Boolean, nullable=False),
    Column("state", String(16), nullable=False),
    Column("opened_at", DateTime(timezone=False), nullable=False),
    Column("closed_at", DateTime(timezone=False), nullable=True),
    Column("close_reason", Text, nullable=True),
    Column("opened_by", String(32), nullable=False),
    # The backend running it (`sos.backend_id`) and until when its hold lasts; NULL until one
    # takes it (migration 0007). See IncidentStore.hold / take_over.
    Column("run_by", String(128), nullable=True),
    Column("run_until", DateTime(timezone=False), nullable=True),
    Index(
        "uq_incidents_open_stb_ip",
        "stb_ip",
        unique=True,
        sqlite_where=Column("closed_at").is_(None),
        postgresql_where=Column("closed_at").is_(None),
    ),
    Index("ix_incidents_opened_at", "opened_at"),
)

incident_events = Table(
    "incident_events",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("incident_id", _ID, ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("at", DateTime(timezone=False), nullable=False),
    Column("kind", String(32), nullable=False),
    # Hex of the STB's 128-bit request id for the event that recorded a request; NULL otherwise.
    Column("request_id", String(32), nullable=True, unique=True),
    Column("detail", Text, nullable=False),
)
