"""Camera clips (issue 9): one row per incident, camera and part (`recent`, `full`), the video in
the clip storage; rows and files are deleted after `http.clip_retention_s`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "clips",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("incident_id", _ID, nullable=False),
        sa.Column("hub_id", sa.String(63), nullable=False),
        sa.Column("camera", sa.String(32), nullable=False),
        sa.Column("part", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("storage_key", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("video_start", sa.DateTime(timezone=False), nullable=False),
        sa.Column("video_end", sa.DateTime(timezone=False), nullable=False),
        sa.Column("gaps", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=False), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_clips"),
        sa.UniqueConstraint("incident_id", "camera", "part", name="uq_clips_incident_camera_part"),
    )
    op.create_index("ix_clips_incident_id", "clips", ["incident_id"])
    op.create_index("ix_clips_stored_at", "clips", ["stored_at"])


def downgrade() -> None:
    op.drop_index("ix_clips_stored_at", table_name="clips")
    op.drop_index("ix_clips_incident_id", table_name="clips")
    op.drop_table("clips")
