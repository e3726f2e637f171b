"""The asset materializer's rows: handled events, claims, cooldowns, decisions, and the state
its rules read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from apphub.domain.materialize import WorkflowState
from apphub.domain.runs import ACTIVE_RUN_STATUSES
from apphub.store import handled as handled_store
from apphub.store.dialect import insert_new_returning, upsert
from apphub.store.events import PROCESSED
from apphub.store.tables import materializer_claims as claims
from apphub.store.tables import materializer_cooldowns as cooldowns
from apphub.store.tables import materializer_decisions as decisions
from apphub.store.tables import materializer_events as handled
from apphub.store.tables import workflow_definitions, workflow_events, workflow_runs
from apphub.store.tables import workflow_run_step_assets as productions

# --- handled events --------------------------------------------------------------------------


async def mark_handled(
    connection: AsyncConnection, events: Sequence[tuple[str, str]], now: datetime
) -> set[str]:
    """Note that the materializer handles these (id, type) events now; returns the ids that
    were not handled before."""
    return await handled_store.mark_handled(connection, handled, events, now)


async def unhandled_events(
    connection: AsyncConnection,
    types: Sequence[str],
    type_prefixes: Sequence[str],
    received_between: tuple[datetime, datetime],
    limit: int,
) -> list[str]:
    """Ids of events of these types, received in the window and processed by the ingress
    (so handed over), that the materializer never handled."""
    events = workflow_events
    wanted = or_(
        events.c.type.in_(list(types)), *(events.c.type.startswith(p) for p in type_prefixes)
    )
    query = (
        select(events.c.id)
        .outerjoin(handled, handled.c.event_id == events.c.id)
        .where(
            handled.c.event_id.is_(None),
            events.c.status == PROCESSED,
            wanted,
            events.c.received_at >= received_between[0],
            events.c.received_at < received_between[1],
        )
        .order_by(events.c.received_at, events.c.seq)
        .limit(limit)
    )
    return list((await connection.execute(query)).scalars())


async def prune_handled(connection: AsyncConnection, before: datetime) -> int:
    return await handled_store.prune_handled(connection, handled, before)


# --- the state decisions read -----------------------------------------------------------------


async def workflow_states(
    connection: AsyncConnection, workflow_ids: Sequence[str], partition: str
) -> dict[str, WorkflowState]:
    """Latest production, in-flight run and cooldown of each workflow, for one partition.

    One statement, however many workflows: this is on the path of every upstream event.
    """
    if not workflow_ids:
        return {}
    workflow = workflow_definitions.c.id
    latest = select(func.max(productions.c.produced_at)).where(
        productions.c.workflow_definition_id == workflow, productions.c.partition_key == partition
    )
    running = select(claims.c.workflow_run_id).where(
        claims.c.workflow_definition_id == workflow, claims.c.partition_key == partition
    )
    cooling = select(cooldowns.c.next_eligible_at).where(
        cooldowns.c.workflow_definition_id == workflow, cooldowns.c.partition_key == partition
    )
    query = select(
        workflow,
        latest.scalar_subquery().label("latest"),
        running.scalar_subquery().label("running"),
        cooling.scalar_subquery().label("cooling"),
    ).where(workflow.in_(list(workflow_ids)))
    rows = await connection.execute(query)
    found = {row.id: WorkflowState(row.latest, row.running, row.cooling) for row in rows}
    return {wid: found.get(wid, WorkflowState()) for wid in workflow_ids}


async def latest_production(
    connection: AsyncConnection, workflow_id: str, asset_key: str, partition: str
) -> datetime | None:
    moment: datetime | None = await connection.scalar(
        select(func.max(productions.c.produced_at)).where(
            productions.c.workflow_definition_id == workflow_id,
            productions.c.asset_key == asset_key,
            productions.c.partition_key == partition,
        )
    )
    return moment


async def run_status(connection: AsyncConnection, run_id: str) -> Any:
    """(status, started_at) of a run, or None."""
    return (
        await connection.execute(
            select(workflow_runs.c.status, workflow_runs.c.started_at).where(
                workflow_runs.c.id == run_id
            )
        )
    ).first()


# --- decisions ----------------------------------------------------------------------------------


async def record_decisions(
    connection: AsyncConnection, rows: Sequence[dict[str, Any]]
) -> set[tuple[str, str, str]]:
    """Insert decisions; returns the (event, workflow, partition) triples that were new."""
    inserted = await insert_new_returning(
        connection,
        decisions,
        rows,
        [decisions.c.event_id, decisions.c.workflow_definition_id, decisions.c.partition_key],
    )
    return {(row[0], row[1], row[2]) for row in inserted}


async def change_decision(
    connection: AsyncConnection,
    event_id: str,
    workflow_id: str,
    partition: str,
    values: dict[str, Any],
) -> None:
    await connection.execute(
        update(decisions)
        .where(
            decisions.c.event_id == event_id,
            decisions.c.workflow_definition_id == workflow_id,
            decisions.c.partition_key == partition,
        )
        .values(values)
    )


async def recent_decisions(
    connection: AsyncConnection,
    *,
    workflow_ids: Sequence[str] = (),
    asset_key: str | None = None,
    limit: int = 50,
) -> list[Any]:
    """Newest first: decisions about these workflows, or about materializing an asset."""
    matches: list[ColumnElement[bool]] = []
    if workflow_ids:
        matches.append(decisions.c.workflow_definition_id.in_(list(workflow_ids)))
    if asset_key is not None:
        matches.append(decisions.c.asset_key == asset_key)
    if not matches:
        return []
    query = (
        select(decisions)
        .where(or_(*matches))
        .order_by(decisions.c.at.desc(), decisions.c.id.desc())
        .limit(limit)
    )
    return list(await connection.execute(query))


# --- claims ---------------------------------------------------------------------------------


def _claim_of(workflow_id: str, partition: str) -> Any:
    return and_(claims.c.workflow_definition_id == workflow_id, claims.c.partition_key == partition)


async def take_claim(connection: AsyncConnection, row: dict[str, Any]) -> bool:
    """The one in-flight auto run of (workflow, partition); False when another holds it."""
    taken = await insert_new_returning(connection, claims, [row], [claims.c.workflow_run_id])
    return bool(taken)


async def note_follow_up(
    connection: AsyncConnection,
    workflow_id: str,
    partition: str,
    follow_up: dict[str, Any],
    produced_at: datetime,
) -> bool:
    """Keep the newest upstream change coalesced into the in-flight run.

    False when there is no claim any more (its run just ended): the caller decides again.
    """
    newer = or_(claims.c.follow_up_at.is_(None), claims.c.follow_up_at < produced_at)
    result = await connection.execute(
        update(claims)
        .where(_claim_of(workflow_id, partition), newer)
        .values(follow_up=follow_up, follow_up_at=produced_at)
    )
    return bool(result.rowcount) or await claim_held(connection, workflow_id, partition)


async def claim_held(connection: AsyncConnection, workflow_id: str, partition: str) -> bool:
    held = await connection.scalar(
        select(func.count()).select_from(claims).where(_claim_of(workflow_id, partition))
    )
    return bool(held)


async def release_claim_of_run(connection: AsyncConnection, run_id: str) -> Any:
    """Delete the claim a run holds and return it (None when it holds none)."""
    rows = await connection.execute(
        delete(claims).where(claims.c.workflow_run_id == run_id).returning(claims)
    )
    return rows.first()


async def orphaned_claims(connection: AsyncConnection, limit: int) -> list[Any]:
    """Claims whose run already ended (it was canceled before a worker saw it, say)."""
    rows = await connection.execute(
        select(claims.c.workflow_run_id)
        .join(workflow_runs, workflow_runs.c.id == claims.c.workflow_run_id, isouter=True)
        .where(
            (workflow_runs.c.status.is_(None))
            | (workflow_runs.c.status.not_in(ACTIVE_RUN_STATUSES))
        )
        .limit(limit)
    )
    return list(rows.scalars())


# --- cooldowns and owed work -------------------------------------------------------------------


async def cooldown(
    connection: AsyncConnection, workflow_id: str, partition: str, *, lock: bool = False
) -> Any:
    """The cooldown row; `lock` holds it (PostgreSQL) until the transaction ends."""
    query = select(cooldowns).where(_cooldown_of(workflow_id, partition))
    if lock:
        query = query.with_for_update()
    return (await connection.execute(query)).first()


def _cooldown_of(workflow_id: str, partition: str) -> Any:
    return and_(
        cooldowns.c.workflow_definition_id == workflow_id, cooldowns.c.partition_key == partition
    )


async def set_cooldown(
    connection: AsyncConnection,
    workflow_id: str,
    partition: str,
    *,
    failures: int,
    until: datetime | None,
    pending: dict[str, Any] | None,
    now: datetime,
) -> None:
    """Store the cooldown state; no failures and nothing owed removes the row."""
    if failures == 0 and pending is None:
        await connection.execute(delete(cooldowns).where(_cooldown_of(workflow_id, partition)))
        return
    await upsert(
        connection,
        cooldowns,
        {
            "workflow_definition_id": workflow_id,
            "partition_key": partition,
            "failures": failures,
            "next_eligible_at": until,
            "pending": pending,
            "updated_at": now,
        },
        conflict=("workflow_definition_id", "partition_key"),
        update=("failures", "next_eligible_at", "pending", "updated_at"),
    )


async def claims_of(connection: AsyncConnection, workflow_id: str) -> list[Any]:
    """A workflow's claims, each with its run's `run_started_at` (null until it starts)."""
    query = (
        select(claims, workflow_runs.c.started_at.label("run_started_at"))
        .outerjoin(workflow_runs, workflow_runs.c.id == claims.c.workflow_run_id)
        .where(claims.c.workflow_definition_id == workflow_id)
        .order_by(claims.c.partition_key)
    )
    return list(await connection.execute(query))


async def cooldowns_of(connection: AsyncConnection, workflow_id: str) -> list[Any]:
    return await _per_partition(connection, cooldowns, workflow_id)


async def _per_partition(connection: AsyncConnection, table: Table, workflow_id: str) -> list[Any]:
    query = select(table).where(table.c.workflow_definition_id == workflow_id)
    return list(await connection.execute(query.order_by(table.c.partition_key)))
