"""Index subscribers by update time: the voice service pre-renders what changed since its last look.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_subscribers_updated_at", "subscribers", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_updated_at", table_name="subscribers")
