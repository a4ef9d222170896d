"""The `clips` table (SQLAlchemy Core), on the directory's metadata: the same database, one schema.

One row per (incident, camera, part), `part` being `recent` (the last `clip.first_s`, uploaded
first) or `full` (the whole `clip.clip_s`). A row exists from the first byte of its upload
(`state` "uploading") and becomes "stored" when every byte arrived and the SHA-256 matched. The
video itself is in the clip storage under `storage_key`. Times are naive UTC like the directory's.
Migration: voip_sos/directory/migrations/versions/0006_clips.py.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Float, Integer, String, Table, Text, UniqueConstraint

from voip_sos.directory.models import metadata

__all__ = ["clips"]

# BIGINT on PostgreSQL; INTEGER on SQLite so the id is the rowid (auto-increment there needs it).
_ID = BigInteger().with_variant(Integer(), "sqlite")

clips = Table(
    "clips",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    # No foreign key, like `links`: deleting clips at retention never touches the audit record.
    Column("incident_id", _ID, nullable=False, index=True),
    Column("hub_id", String(63), nullable=False),
    Column("camera", String(32), nullable=False),
    Column("part", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("storage_key", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("video_start", DateTime(timezone=False), nullable=False),
    Column("video_end", DateTime(timezone=False), nullable=False),
    Column("gaps", Text, nullable=False),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("stored_at", DateTime(timezone=False), nullable=True, index=True),
    UniqueConstraint("incident_id", "camera", "part", name="uq_clips_incident_camera_part"),
)
