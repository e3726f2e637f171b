"""The few statements whose SQL differs between SQLite and PostgreSQL: upserts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def _insert(connection: AsyncConnection, table: Table) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


async def upsert(
    connection: AsyncConnection,
    table: Table,
    values: dict[str, Any],
    conflict: Sequence[str],
    update: Sequence[str],
    *,
    unless_newer: str | None = None,
) -> None:
    """Insert, or update the `update` columns of the row that has the same `conflict` key.

    `unless_newer`: a column; the stored row is left alone when its value there is newer
    than the one written (decided by the statement itself, so concurrent writers agree).
    """
    statement = _insert(connection, table).values(values)
    where = None
    if unless_newer is not None:
        stored, written = table.c[unless_newer], statement.excluded[unless_newer]
        where = or_(stored.is_(None), written.is_(None), stored <= written)
    statement = statement.on_conflict_do_update(
        index_elements=list(conflict),
        set_={column: statement.excluded[column] for column in update},
        where=where,
    )
    await connection.execute(statement)


async def insert_missing(
    connection: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert rows, skipping any whose unique key already exists."""
    if rows:
        await connection.execute(_insert(connection, table).on_conflict_do_nothing(), list(rows))


async def insert_new_returning(
    connection: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    returning: Sequence[Any],
) -> list[Any]:
    """Insert rows whose unique key is new; returns the inserted ones (replays come back empty)."""
    if not rows:
        return []
    statement = _insert(connection, table).on_conflict_do_nothing().returning(*returning)
    result = await connection.execute(statement, list(rows))
    return list(result)


async def upsert_adding(
    connection: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    conflict: Sequence[str],
    add: Sequence[str],
    replace: Sequence[str] = (),
) -> None:
    """Insert rows in one call; a row whose `conflict` key exists adds its `add` columns
    to the stored ones (and overwrites `replace`), so concurrent writers never lose a count.

    Each key may appear once in `rows` (PostgreSQL refuses to touch a row twice); callers sort
    them, so concurrent writers lock rows in the same order and cannot deadlock.
    """
    if not rows:
        return
    statement = _insert(connection, table)
    updates = {column: table.c[column] + statement.excluded[column] for column in add}
    updates |= {column: statement.excluded[column] for column in replace}
    # executemany with one statement: compiled once and cached (a multi-row VALUES is not).
    await connection.execute(
        statement.on_conflict_do_update(index_elements=list(conflict), set_=updates), list(rows)
    )
