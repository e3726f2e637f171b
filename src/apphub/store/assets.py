"""Asset productions (versions), stale marks, partition parameters, and waits for assets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.domain.asset_graph import Declaration
from apphub.store.dialect import insert_missing, upsert
from apphub.store.tables import (
    workflow_asset_declarations,
    workflow_asset_partition_parameters,
    workflow_asset_stale_partitions,
    workflow_definitions,
    workflow_run_asset_waits,
    workflow_run_step_assets,
    workflow_runs,
)

NO_PARTITION = ""
"""How a missing partition key is stored (NULL would make every row unique)."""

productions = workflow_run_step_assets


def stored_partition(partition_key: str | None) -> str:
    return partition_key or NO_PARTITION


def served_partition(stored: str) -> str | None:
    return stored or None


# --- productions --------------------------------------------------------------------------


async def record_productions(
    connection: AsyncConnection, step_row_ids: Iterable[str], rows: Sequence[dict[str, Any]]
) -> None:
    """Record what steps produced; a step's earlier attempt's records are replaced."""
    replaced = list(step_row_ids)
    if replaced:
        await connection.execute(
            delete(productions).where(productions.c.workflow_run_step_id.in_(replaced))
        )
    if rows:
        await connection.execute(productions.insert(), list(rows))


async def latest_by_asset(
    connection: AsyncConnection, workflow_definition_id: str
) -> dict[str, Any]:
    """The newest production of each asset of one workflow (any partition)."""
    ranked = (
        select(
            productions,
            func.row_number()
            .over(
                partition_by=productions.c.asset_key,
                order_by=(productions.c.produced_at.desc(), productions.c.id.desc()),
            )
            .label("rank"),
        )
        .where(productions.c.workflow_definition_id == workflow_definition_id)
        .subquery()
    )
    rows = await connection.execute(select(ranked).where(ranked.c.rank == 1))
    return {row.asset_key: row for row in rows}


async def history(
    connection: AsyncConnection,
    workflow_definition_id: str,
    asset_key: str,
    partition_key: str | None,
    limit: int,
) -> list[Any]:
    query = select(productions).where(
        productions.c.workflow_definition_id == workflow_definition_id,
        productions.c.asset_key == asset_key,
    )
    if partition_key is not None:
        query = query.where(productions.c.partition_key == stored_partition(partition_key))
    query = query.order_by(productions.c.produced_at.desc(), productions.c.id.desc()).limit(limit)
    return list(await connection.execute(query))


async def partition_summaries(
    connection: AsyncConnection, workflow_definition_id: str, asset_key: str
) -> dict[str, tuple[int, Any]]:
    """Per stored partition key: how many productions, and the newest one."""
    ranked = (
        select(
            productions,
            func.row_number()
            .over(
                partition_by=productions.c.partition_key,
                order_by=(productions.c.produced_at.desc(), productions.c.id.desc()),
            )
            .label("rank"),
            func.count().over(partition_by=productions.c.partition_key).label("total"),
        )
        .where(
            productions.c.workflow_definition_id == workflow_definition_id,
            productions.c.asset_key == asset_key,
        )
        .subquery()
    )
    rows = await connection.execute(select(ranked).where(ranked.c.rank == 1))
    return {row.partition_key: (row.total, row) for row in rows}


async def latest_everywhere(connection: AsyncConnection) -> list[Any]:
    """The newest production per (workflow, asset, partition), for the cross-workflow graph."""
    ranked = (
        select(
            productions,
            workflow_definitions.c.slug.label("workflow_slug"),
            func.row_number()
            .over(
                partition_by=(
                    productions.c.workflow_definition_id,
                    productions.c.asset_key,
                    productions.c.partition_key,
                ),
                order_by=(productions.c.produced_at.desc(), productions.c.id.desc()),
            )
            .label("rank"),
        )
        .join(
            workflow_definitions, workflow_definitions.c.id == productions.c.workflow_definition_id
        )
        .subquery()
    )
    return list(await connection.execute(select(ranked).where(ranked.c.rank == 1)))


async def available_assets(
    connection: AsyncConnection, asset_keys: Sequence[str], partition_key: str | None
) -> set[str]:
    """Which of these assets were ever produced, for this partition (or unpartitioned)."""
    if not asset_keys:
        return set()
    query = select(productions.c.asset_key).where(productions.c.asset_key.in_(asset_keys))
    if partition_key:
        query = query.where(productions.c.partition_key.in_([partition_key, NO_PARTITION]))
    rows = await connection.execute(query.distinct())
    return set(rows.scalars())


# --- declarations across workflows ---------------------------------------------------------


async def declarations(
    connection: AsyncConnection,
    asset_keys: Sequence[str] | None = None,
    *,
    workflow_id: str | None = None,
) -> list[Any]:
    """Asset declarations with their workflow's slug; all, for some assets, or one workflow's."""
    query = select(
        workflow_asset_declarations, workflow_definitions.c.slug.label("workflow_slug")
    ).join(
        workflow_definitions,
        workflow_definitions.c.id == workflow_asset_declarations.c.workflow_definition_id,
    )
    if asset_keys is not None:
        query = query.where(workflow_asset_declarations.c.asset_key.in_(list(asset_keys)))
    if workflow_id is not None:
        query = query.where(workflow_asset_declarations.c.workflow_definition_id == workflow_id)
    query = query.order_by(workflow_definitions.c.slug, workflow_asset_declarations.c.id)
    return list(await connection.execute(query))


async def graph_declarations(
    connection: AsyncConnection, *, workflow_id: str | None = None
) -> list[Declaration]:
    """Declarations as the materializer's asset graph takes them: all, or one workflow's."""
    return [
        Declaration(
            row.workflow_definition_id,
            row.workflow_slug,
            row.step_id,
            row.direction,
            row.asset_key,
            row.freshness,
            row.auto_materialize,
            row.asset_id,
        )
        for row in await declarations(connection, workflow_id=workflow_id)
    ]


# --- stale marks and partition parameters ----------------------------------------------------


async def mark_stale(connection: AsyncConnection, values: dict[str, Any]) -> None:
    await upsert(
        connection,
        workflow_asset_stale_partitions,
        values,
        conflict=("workflow_definition_id", "asset_key", "partition_key"),
        update=("note", "requested_by", "requested_at"),
    )


async def clear_stale(
    connection: AsyncConnection,
    workflow_definition_id: str,
    asset_key: str,
    partition_key: str | None,
) -> int:
    result = await connection.execute(
        delete(workflow_asset_stale_partitions).where(
            workflow_asset_stale_partitions.c.workflow_definition_id == workflow_definition_id,
            workflow_asset_stale_partitions.c.asset_key == asset_key,
            workflow_asset_stale_partitions.c.partition_key == stored_partition(partition_key),
        )
    )
    return result.rowcount


async def stale_marks(
    connection: AsyncConnection, workflow_definition_id: str | None = None
) -> list[Any]:
    query = select(
        workflow_asset_stale_partitions, workflow_definitions.c.slug.label("workflow_slug")
    ).join(
        workflow_definitions,
        workflow_definitions.c.id == workflow_asset_stale_partitions.c.workflow_definition_id,
    )
    if workflow_definition_id is not None:
        query = query.where(
            workflow_asset_stale_partitions.c.workflow_definition_id == workflow_definition_id
        )
    return list(await connection.execute(query))


async def set_partition_parameters(connection: AsyncConnection, values: dict[str, Any]) -> None:
    await upsert(
        connection,
        workflow_asset_partition_parameters,
        values,
        conflict=("workflow_definition_id", "asset_key", "partition_key"),
        update=("parameters", "updated_at"),
    )


async def delete_partition_parameters(
    connection: AsyncConnection, workflow_definition_id: str, asset_key: str, partition_key: str
) -> int:
    table = workflow_asset_partition_parameters
    result = await connection.execute(
        delete(table).where(
            table.c.workflow_definition_id == workflow_definition_id,
            table.c.asset_key == asset_key,
            table.c.partition_key == partition_key,
        )
    )
    return result.rowcount


async def partition_parameters(
    connection: AsyncConnection, workflow_definition_id: str, asset_key: str
) -> dict[str, Any]:
    table = workflow_asset_partition_parameters
    rows = await connection.execute(
        select(table.c.partition_key, table.c.parameters).where(
            table.c.workflow_definition_id == workflow_definition_id,
            table.c.asset_key == asset_key,
        )
    )
    return {row.partition_key: row.parameters for row in rows}


# --- steps waiting for an asset --------------------------------------------------------------


async def add_waits(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    await insert_missing(connection, workflow_run_asset_waits, rows)


async def wake_waiting(
    connection: AsyncConnection, produced: Sequence[tuple[str, str]], now: datetime
) -> list[str]:
    """Runs with a step waiting for one of these (asset, partition) pairs, made due now.

    Runs in the producer's transaction, so a consumer can never miss the production: a
    driver that picks the run up re-checks every waiting step.
    """
    if not produced:
        return []
    waits = workflow_run_asset_waits
    matches = [
        and_(
            waits.c.asset_key == key,
            or_(waits.c.partition_key == partition, waits.c.partition_key == NO_PARTITION),
        )
        if partition
        else waits.c.asset_key == key
        for key, partition in produced
    ]
    rows = list(
        await connection.execute(
            select(waits.c.id, waits.c.workflow_run_id, waits.c.workflow_run_step_id).where(
                or_(*matches)
            )
        )
    )
    if not rows:
        return []
    run_ids = list({row.workflow_run_id for row in rows})
    await connection.execute(
        update(workflow_runs).where(workflow_runs.c.id.in_(run_ids)).values(wake_at=now)
    )
    await connection.execute(delete(waits).where(waits.c.id.in_([row.id for row in rows])))
    return run_ids


async def clear_stale_for(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """A new production of an asset partition clears its stale mark."""
    table = workflow_asset_stale_partitions
    matches = [
        and_(
            table.c.workflow_definition_id == row["workflow_definition_id"],
            table.c.asset_key == row["asset_key"],
            table.c.partition_key == row["partition_key"],
        )
        for row in rows
    ]
    if matches:
        await connection.execute(delete(table).where(or_(*matches)))
