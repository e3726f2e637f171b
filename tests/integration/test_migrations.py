"""`alembic upgrade head` on an empty database builds exactly the tables the code declares."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url

from apphub.store.database import Database, open_database
from apphub.store.migrate import include_object_for, migrate
from apphub.store.tables import metadata
from tests.conftest import Backend, _admin

EXPECTED_TABLES = {
    "alembic_version",
    "audit_logs",
    "durable_timers",
    "event_saved_views",
    "job_definitions",
    "job_runs",
    "materializer_claims",
    "materializer_cooldowns",
    "materializer_decisions",
    "materializer_events",
    "metric_counters",
    "services",
    "workflow_asset_declarations",
    "workflow_asset_partition_parameters",
    "workflow_asset_stale_partitions",
    "workflow_definitions",
    "trigger_events",
    "workflow_event_triggers",
    "workflow_events",
    "workflow_run_asset_waits",
    "workflow_run_step_assets",
    "workflow_run_steps",
    "workflow_runs",
    "workflow_schedules",
    "workflow_trigger_deliveries",
}


def _differences(connection: Connection) -> list[object]:
    include = include_object_for(connection.dialect.name)
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": include}
    )
    return list(compare_metadata(context, metadata))


@pytest.fixture
async def empty_database(backend: Backend, tmp_path: Path) -> Database:
    """A database with no tables at all, of the parametrized backend."""
    if backend.name == "sqlite":
        return open_database(f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    url = make_url(backend.url)
    name = f"{url.database}_empty"
    admin = url.set(database="postgres").render_as_string(hide_password=False)
    await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _admin(admin, f'CREATE DATABASE "{name}"')
    return open_database(url.set(database=name).render_as_string(hide_password=False))


async def test_upgrade_from_empty_matches_the_tables(empty_database: Database) -> None:
    database = empty_database
    try:
        await migrate(database)
        await migrate(database)  # a second start finds nothing to do
        async with database.read() as connection:
            tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            differences = await connection.run_sync(_differences)
            version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        assert tables == EXPECTED_TABLES
        assert differences == []
        assert version == "0009"
    finally:
        await database.dispose()
