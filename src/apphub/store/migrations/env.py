"""Alembic runs inside a connection that `apphub.store.migrate` opened and locked."""

from __future__ import annotations

from alembic import context

from apphub.store.migrate import include_object_for
from apphub.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_object=include_object_for(connection.dialect.name),
)
with context.begin_transaction():
    context.run_migrations()
