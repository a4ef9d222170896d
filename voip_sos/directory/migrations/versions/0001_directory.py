"""Directory: subscribers, their STBs and ordered emergency contacts (F1).

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(64), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("address_line", sa.Text, nullable=False),
        *[
            sa.Column(part, sa.Text, nullable=False, server_default="")
            for part in (
                "province",
                "city",
                "district",
                "street",
                "number",
                "building",
                "unit",
                "floor",
                "room",
                "notes",
            )
        ],
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subscribers"),
        sa.UniqueConstraint("uid", name="uq_subscribers_uid"),
    )
    op.create_table(
        "stbs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.Integer, nullable=False),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("secret_hex", sa.String(128), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=False), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_stbs"),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name="fk_stbs_subscriber_id_subscribers",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("ip", name="uq_stbs_ip"),
    )
    op.create_index("ix_stbs_subscriber_id", "stbs", ["subscriber_id"])
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("phone", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name="fk_contacts_subscriber_id_subscribers",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("subscriber_id", "position", name="uq_contacts_subscriber_id_position"),
    )


def downgrade() -> None:
    op.drop_table("contacts")
    op.drop_index("ix_stbs_subscriber_id", table_name="stbs")
    op.drop_table("stbs")
    op.drop_table("subscribers")
