"""Which backend runs an open incident, and until when its hold lasts (issue 6/7, several backends
on one database): a backend renews the hold of its incidents every few seconds; another takes an
incident over only once its hold has run out, so a restart of one backend no longer makes it call
for the incidents the other is running, and the incidents of a backend that died are resumed by
one that lives.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incidents", sa.Column("run_by", sa.String(128), nullable=True))
    op.add_column("incidents", sa.Column("run_until", sa.DateTime(timezone=False), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35): a batch copy of `incidents` would cascade to its events.
    op.drop_column("incidents", "run_until")
    op.drop_column("incidents", "run_by")
