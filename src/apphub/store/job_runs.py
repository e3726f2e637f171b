"""Job runs: records, and claims of standalone job runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from apphub.domain.runs import JobRun
from apphub.store.rows import camel_row, same_columns
from apphub.store.tables import (
    job_definitions,
    job_runs,
)

_UPDATE_JOB_RUN = update(job_runs).where(job_runs.c.id == bindparam("job_run_id"))


def _job_run_query() -> Select[Any]:
    return select(job_runs, job_definitions.c.slug.label("job_slug")).join(
        job_definitions, job_definitions.c.id == job_runs.c.job_definition_id
    )


async def insert_job_runs(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await connection.execute(insert(job_runs), list(rows))


async def update_job_run(
    connection: AsyncConnection, job_run_id: str, values: dict[str, Any]
) -> None:
    await update_job_runs(connection, [values | {"job_run_id": job_run_id}])


async def update_job_runs(connection: AsyncConnection, changes: Sequence[dict[str, Any]]) -> None:
    """Several job run rows in one call; each change names its row as `job_run_id`."""
    for batch in same_columns(changes):
        await connection.execute(_UPDATE_JOB_RUN, batch)


async def get_job_run(connection: AsyncConnection, job_run_id: str) -> JobRun | None:
    row = (await connection.execute(_job_run_query().where(job_runs.c.id == job_run_id))).first()
    return JobRun.model_validate(camel_row(row._mapping)) if row else None


async def job_run_row(connection: AsyncConnection, job_run_id: str) -> Any:
    return (await connection.execute(_job_run_query().where(job_runs.c.id == job_run_id))).first()


async def list_job_runs(
    connection: AsyncConnection,
    *,
    job_definition_id: str | None = None,
    status: str | None = None,
    limit: int,
    offset: int = 0,
) -> list[JobRun]:
    query = _job_run_query()
    if job_definition_id is not None:
        query = query.where(job_runs.c.job_definition_id == job_definition_id)
    if status is not None:
        query = query.where(job_runs.c.status == status)
    query = query.order_by(job_runs.c.created_at.desc(), job_runs.c.id.desc())
    rows = await connection.execute(query.limit(limit).offset(offset))
    return [JobRun.model_validate(camel_row(row._mapping)) for row in rows]


async def claim_job_run(
    connection: AsyncConnection,
    job_run_id: str,
    worker_id: str,
    now: datetime,
    stale_before: datetime,
) -> bool:
    """Take a standalone job run that is due, or whose holder died. Only one wins."""
    result = await connection.execute(
        update(job_runs)
        .where(
            job_runs.c.id == job_run_id,
            job_runs.c.workflow_run_step_id.is_(None),
            or_(
                and_(
                    job_runs.c.status == "pending",
                    or_(job_runs.c.next_attempt_at.is_(None), job_runs.c.next_attempt_at <= now),
                ),
                and_(job_runs.c.status == "running", job_runs.c.heartbeat_at < stale_before),
            ),
        )
        .values(claimed_by=worker_id, heartbeat_at=now, updated_at=now)
    )
    return result.rowcount == 1


async def job_runs_to_wake(
    connection: AsyncConnection, now: datetime, stale_before: datetime, limit: int
) -> list[tuple[str, datetime | None]]:
    """Standalone job runs that wait for a worker (with their due time) or were orphaned."""
    rows = await connection.execute(
        select(job_runs.c.id, job_runs.c.next_attempt_at)
        .where(
            job_runs.c.workflow_run_step_id.is_(None),
            or_(
                and_(job_runs.c.status == "pending", job_runs.c.claimed_by.is_(None)),
                and_(job_runs.c.status == "running", job_runs.c.heartbeat_at < stale_before),
            ),
        )
        .order_by(job_runs.c.created_at)
        .limit(limit)
    )
    return [(row.id, row.next_attempt_at) for row in rows]
