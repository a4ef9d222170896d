"""Subscribers get their home hub's id (issue 8): the backend pushes incident context to that hub and
sends it the family's revoke. Nullable (not every home has a hub); unique where set, because one hub
serves one home and its events must land on exactly one subscriber's incidents.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("hub_id", sa.String(63), nullable=True))
    # A unique index, not a constraint: both databases let many NULLs through a unique index, and
    # creating an index needs no table copy on SQLite.
    op.create_index("ix_subscribers_hub_id", "subscribers", ["hub_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_subscribers_hub_id", table_name="subscribers")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), not a batch table copy: dropping the old
    # table of a copy with foreign keys on would cascade-delete every STB and contact.
    op.drop_column("subscribers", "hub_id")
