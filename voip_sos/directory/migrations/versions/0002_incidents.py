"""Incidents: one row per incident, an append-only event log, uniqueness enforced by the database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("stb_ip", sa.String(45), nullable=False),
        sa.Column("uid", sa.String(64), nullable=False),
        sa.Column("test", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("close_reason", sa.Text, nullable=True),
        sa.Column("opened_by", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    # One open incident per STB, also across backends sharing the database.
    op.create_index(
        "uq_incidents_open_stb_ip",
        "incidents",
        ["stb_ip"],
        unique=True,
        sqlite_where=sa.text("closed_at IS NULL"),
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.create_index("ix_incidents_opened_at", "incidents", ["opened_at"])
    op.create_table(
        "incident_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("incident_id", _ID, nullable=False),
        sa.Column("at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_incident_events"),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name="fk_incident_events_incident_id_incidents",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("request_id", name="uq_incident_events_request_id"),
    )
    op.create_index("ix_incident_events_incident_id", "incident_events", ["incident_id"])


def downgrade() -> None:
    op.drop_index("ix_incident_events_incident_id", table_name="incident_events")
    op.drop_table("incident_events")
    op.drop_index("ix_incidents_opened_at", table_name="incidents")
    op.drop_index("uq_incidents_open_stb_ip", table_name="incidents")
    op.drop_table("incidents")
