"""Bring a database to the newest schema; safe when several processes start at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from apphub.store.database import Database

_MIGRATION_LOCK_KEY = 0x61707068756201  # "apphub\x01": one advisory lock id for migrations


def include_object_for(dialect_name: str) -> Callable[..., bool]:
    """Alembic comparison filter: leave out what only another dialect creates (a GIN index)."""

    def include(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        condition = getattr(obj, "_ddl_if", None)
        dialect = getattr(condition, "dialect", None)
        return not (kind == "index" and dialect is not None and dialect != dialect_name)

    return include


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "apphub.store:migrations")
    config.attributes["connection"] = connection
    return config


async def migrate(database: Database) -> None:
    """Upgrade to head in one transaction; on PostgreSQL, concurrent callers wait their turn."""
    async with database.write() as connection:
        if database.is_postgres:
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        await connection.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")
