"""Alembic environment: runs on the connection handed in by voip_sos.directory.schema."""

from __future__ import annotations

from alembic import context

from voip_sos.directory.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `voip-sos db upgrade` (voip_sos.directory.schema)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
