"""The directory's tables (SQLAlchemy Core). Only voip_sos.directory touches these.

Times are stored as naive UTC (`DateTime` without zone) so SQLite and PostgreSQL hold the same
values; the repository turns them into aware UTC datetimes.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["contacts", "metadata", "stbs", "subscribers"]

# Deterministic constraint names, so Alembic migrations can refer to them on both databases.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("language", String(8), nullable=False),
    Column("address_line", Text, nullable=False),
    Column("province", Text, nullable=False, server_default=""),
    Column("city", Text, nullable=False, server_default=""),
    Column("district", Text, nullable=False, server_default=""),
    Column("street", Text, nullable=False, server_default=""),
    Column("number", Text, nullable=False, server_default=""),
    Column("building", Text, nullable=False, server_default=""),
    Column("unit", Text, nullable=False, server_default=""),
    Column("floor", Text, nullable=False, server_default=""),
    Column("room", Text, nullable=False, server_default=""),
    Column("notes", Text, nullable=False, server_default=""),
    # The home hub's id (docs/hub.md); unique where set (migration 0005: a unique index, NULLs free).
    Column("hub_id", String(63), nullable=True),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("updated_at", DateTime(timezone=False), nullable=False, index=True),
    Index("ix_subscribers_hub_id", "hub_id", unique=True),
)

stbs = Table(
    "stbs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # Normalised text form (voip_sos.directory.validate.normalize_ip); unique across the table: one
    # STB address must always resolve to exactly one home.
    Column("ip", String(45), nullable=False, unique=True),
    Column("secret_hex", String(128), nullable=True),
    Column("last_seen_at", DateTime(timezone=False), nullable=True),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("position", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("phone", String(40), nullable=False),
    UniqueConstraint("subscriber_id", "position"),
)
