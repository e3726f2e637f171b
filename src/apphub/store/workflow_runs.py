"""Workflow runs and their steps: records, claims, fencing, cancel requests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from apphub.domain.runs import ACTIVE_RUN_STATUSES, WorkflowRun, WorkflowRunStep
from apphub.store.rows import camel_row, same_columns
from apphub.store.tables import (
    workflow_definitions,
    workflow_run_steps,
    workflow_runs,
)


class RunKeyTakenError(Exception):
    """An active run of the workflow already holds the run key."""


class LostClaimError(Exception):
    """Another worker took the run over (this one stopped heartbeating for too long)."""


def _run_query() -> Select[Any]:
    return select(workflow_runs, workflow_definitions.c.slug.label("workflow_slug")).join(
        workflow_definitions, workflow_definitions.c.id == workflow_runs.c.workflow_definition_id
    )


async def insert_workflow_run(connection: AsyncConnection, values: dict[str, Any]) -> None:
    """Insert a run; RunKeyTakenError when an active run holds its run key."""
    if values.get("run_key_normalized") is None:  # nothing to conflict on: no savepoint
        await connection.execute(insert(workflow_runs).values(values))
        return
    try:
        async with connection.begin_nested():
            await connection.execute(insert(workflow_runs).values(values))
    except IntegrityError:
        raise RunKeyTakenError from None


async def _with_step_context(connection: AsyncConnection, rows: Sequence[Any]) -> list[WorkflowRun]:
    """Runs as served: `context.steps` is built from the step rows, the one place outputs live."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    step_rows = await connection.execute(
        select(
            workflow_run_steps.c.workflow_run_id,
            workflow_run_steps.c.step_id,
            workflow_run_steps.c.status,
            workflow_run_steps.c.output,
        )
        .where(workflow_run_steps.c.workflow_run_id.in_(ids))
        .order_by(workflow_run_steps.c.created_at, workflow_run_steps.c.step_id)
    )
    by_run: dict[str, dict[str, Any]] = {run_id: {} for run_id in ids}
    for step in step_rows:
        by_run[step.workflow_run_id][step.step_id] = {"status": step.status, "result": step.output}
    runs = []
    for row in rows:
        record = camel_row(row._mapping)
        shared = (record.get("context") or {}).get("shared", {})
        record["context"] = {"shared": shared, "steps": by_run[row.id]}
        runs.append(WorkflowRun.model_validate(record))
    return runs


async def get_workflow_run(connection: AsyncConnection, run_id: str) -> WorkflowRun | None:
    row = (await connection.execute(_run_query().where(workflow_runs.c.id == run_id))).first()
    runs = await _with_step_context(connection, [row] if row else [])
    return runs[0] if runs else None


async def active_run_with_key(
    connection: AsyncConnection, workflow_definition_id: str, run_key_normalized: str
) -> WorkflowRun | None:
    row = (
        await connection.execute(
            _run_query().where(
                workflow_runs.c.workflow_definition_id == workflow_definition_id,
                workflow_runs.c.run_key_normalized == run_key_normalized,
                workflow_runs.c.status.in_(ACTIVE_RUN_STATUSES),
            )
        )
    ).first()
    runs = await _with_step_context(connection, [row] if row else [])
    return runs[0] if runs else None


async def list_workflow_runs(
    connection: AsyncConnection,
    *,
    workflow_definition_id: str | None = None,
    status: str | None = None,
    triggered_by: str | None = None,
    limit: int,
    offset: int = 0,
) -> list[WorkflowRun]:
    query = _run_query()
    if workflow_definition_id is not None:
        query = query.where(workflow_runs.c.workflow_definition_id == workflow_definition_id)
    if status is not None:
        query = query.where(workflow_runs.c.status == status)
    if triggered_by is not None:
        query = query.where(workflow_runs.c.triggered_by == triggered_by)
    query = query.order_by(workflow_runs.c.created_at.desc(), workflow_runs.c.id.desc())
    rows = (await connection.execute(query.limit(limit).offset(offset))).all()
    return await _with_step_context(connection, rows)


async def run_row(connection: AsyncConnection, run_id: str) -> Any:
    """The raw row, claim columns included (the orchestrator's view)."""
    return (await connection.execute(_run_query().where(workflow_runs.c.id == run_id))).first()


async def claim_workflow_run(
    connection: AsyncConnection, run_id: str, worker_id: str, now: datetime, stale_before: datetime
) -> bool:
    """Take the run if nobody holds it, or its holder stopped heartbeating. Only one wins."""
    result = await connection.execute(
        update(workflow_runs)
        .where(
            workflow_runs.c.id == run_id,
            workflow_runs.c.status.in_(ACTIVE_RUN_STATUSES),
            or_(
                workflow_runs.c.claimed_by.is_(None),
                workflow_runs.c.heartbeat_at < stale_before,
            ),
        )
        .values(claimed_by=worker_id, heartbeat_at=now, wake_at=None)
    )
    return result.rowcount == 1


async def release_workflow_run(connection: AsyncConnection, run_id: str, worker_id: str) -> None:
    await connection.execute(
        update(workflow_runs)
        .where(workflow_runs.c.id == run_id, workflow_runs.c.claimed_by == worker_id)
        .values(claimed_by=None)
    )


async def fence_workflow_run(
    connection: AsyncConnection,
    run_id: str,
    worker_id: str,
    now: datetime,
    values: dict[str, Any],
) -> datetime | None:
    """Write run fields only while this worker still holds the run; returns a cancel request.

    Every transition of the orchestrator starts with this statement, so a worker that lost
    its claim cannot write over the new holder's work.
    """
    row = (
        await connection.execute(
            update(workflow_runs)
            .where(workflow_runs.c.id == run_id, workflow_runs.c.claimed_by == worker_id)
            .values(heartbeat_at=now, updated_at=now, **values)
            .returning(workflow_runs.c.cancel_requested_at)
        )
    ).first()
    if row is None:
        raise LostClaimError(run_id)
    cancel_requested_at: datetime | None = row.cancel_requested_at
    return cancel_requested_at


async def request_cancel(connection: AsyncConnection, run_id: str, now: datetime) -> str | None:
    """Cancel at once when no worker holds the run; else flag it for its holder.

    Returns "canceled", "requested", or None when the run has already ended.
    """
    finished = await connection.execute(
        update(workflow_runs)
        .where(
            workflow_runs.c.id == run_id,
            workflow_runs.c.status == "pending",
            workflow_runs.c.claimed_by.is_(None),
        )
        .values(
            status="canceled",
            cancel_requested_at=now,
            completed_at=now,
            updated_at=now,
            error_message="canceled",
        )
    )
    if finished.rowcount == 1:
        await connection.execute(
            update(workflow_run_steps)
            .where(
                workflow_run_steps.c.workflow_run_id == run_id,
                workflow_run_steps.c.status == "pending",
            )
            .values(status="canceled", completed_at=now, updated_at=now)
        )
        return "canceled"
    flagged = await connection.execute(
        update(workflow_runs)
        .where(workflow_runs.c.id == run_id, workflow_runs.c.status.in_(ACTIVE_RUN_STATUSES))
        .values(cancel_requested_at=now, updated_at=now)
    )
    return "requested" if flagged.rowcount == 1 else None


async def workflow_runs_to_wake(
    connection: AsyncConnection, now: datetime, stale_before: datetime, limit: int
) -> list[str]:
    """Active runs nobody is driving that need attention now: never picked up, due to wake
    from a wait, or orphaned by a worker that stopped heartbeating."""
    rows = await connection.execute(
        select(workflow_runs.c.id)
        .where(
            workflow_runs.c.status.in_(ACTIVE_RUN_STATUSES),
            or_(
                and_(
                    workflow_runs.c.claimed_by.is_(None),
                    or_(workflow_runs.c.wake_at.is_(None), workflow_runs.c.wake_at <= now),
                ),
                workflow_runs.c.heartbeat_at < stale_before,
            ),
        )
        .order_by(workflow_runs.c.created_at)
        .limit(limit)
    )
    return list(rows.scalars())


async def insert_steps(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await connection.execute(insert(workflow_run_steps), list(rows))


_UPDATE_STEP = update(workflow_run_steps).where(workflow_run_steps.c.id == bindparam("row_id"))


async def update_step(connection: AsyncConnection, row_id: str, values: dict[str, Any]) -> None:
    await update_steps(connection, [values | {"row_id": row_id}])


async def update_steps(connection: AsyncConnection, changes: Sequence[dict[str, Any]]) -> None:
    """Several step rows in one call; each change names its row as `row_id`.

    One prepared statement and `executemany`: the orchestrator's hot path writes here.
    """
    for batch in same_columns(changes):
        await connection.execute(_UPDATE_STEP, batch)


async def step_rows(connection: AsyncConnection, run_id: str) -> list[Any]:
    rows = await connection.execute(
        select(workflow_run_steps)
        .where(workflow_run_steps.c.workflow_run_id == run_id)
        .order_by(workflow_run_steps.c.created_at, workflow_run_steps.c.fanout_index)
    )
    return list(rows)


async def list_steps(connection: AsyncConnection, run_id: str) -> list[WorkflowRunStep]:
    """Steps in the workflow's topological order, each fan-out's children after it."""
    snapshot = await connection.scalar(
        select(workflow_runs.c.workflow_snapshot).where(workflow_runs.c.id == run_id)
    )
    order = ((snapshot or {}).get("dag") or {}).get("topologicalOrder") or []
    position = {step_id: index for index, step_id in enumerate(order)}

    def key(row: Any) -> tuple[int, int]:
        top = row.parent_step_id or row.step_id
        child = -1 if row.parent_step_id is None else (row.fanout_index or 0)
        return (position.get(top, len(position)), child)

    rows = sorted(await step_rows(connection, run_id), key=key)
    return [WorkflowRunStep.model_validate(camel_row(row._mapping)) for row in rows]
