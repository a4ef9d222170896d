"""The `links` table (SQLAlchemy Core), on the directory's metadata: the same database, one schema.

Only the SHA-256 of a token is stored (`token_hash`, unique), never the token: a copy of the
database or a backup does not hand out working links. Times are naive UTC like the directory's.
Migration: voip_sos/directory/migrations/versions/0003_links.py.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Table, Text

from voip_sos.directory.models import metadata

__all__ = ["links"]

# BIGINT on PostgreSQL; INTEGER on SQLite so the id is the rowid (auto-increment there needs it).
_ID = BigInteger().with_variant(Integer(), "sqlite")

links = Table(
    "links",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    # No foreign key: a link names an incident id as text so the "family" links of later issues
    # and the audit record do not depend on the incidents table's key type.
    Column("incident_id", String(32), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("target", Text, nullable=False),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("expires_at", DateTime(timezone=False), nullable=False, index=True),
)
