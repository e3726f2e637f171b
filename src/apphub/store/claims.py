"""Worker liveness across both run tables: heartbeats, and letting go of claims."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.store.tables import (
    job_runs,
    workflow_runs,
)


async def heartbeat(connection: AsyncConnection, worker_id: str, now: datetime) -> list[str]:
    """Prove this worker alive for all it holds; returns its runs that have a cancel request.

    Workflow runs are locked before job runs, the order a driver's transaction takes them
    in: the other order deadlocks with it on PostgreSQL.
    """
    rows = await connection.execute(
        update(workflow_runs)
        .where(workflow_runs.c.claimed_by == worker_id, workflow_runs.c.status == "running")
        .values(heartbeat_at=now)
        .returning(workflow_runs.c.id, workflow_runs.c.cancel_requested_at)
    )
    canceled = [row.id for row in rows if row.cancel_requested_at is not None]
    await connection.execute(
        update(job_runs)
        .where(job_runs.c.claimed_by == worker_id, job_runs.c.status == "running")
        .values(heartbeat_at=now)
    )
    return canceled


LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


async def release_all_claims(connection: AsyncConnection) -> None:
    """Drop every claim and make every heartbeat stale (embedded restart: the holders died)."""
    for table in (workflow_runs, job_runs):
        await connection.execute(
            update(table)
            .where(table.c.claimed_by.is_not(None))
            .values(claimed_by=None, heartbeat_at=LONG_AGO)
        )


async def release_claims_of(connection: AsyncConnection, worker_id: str) -> list[str]:
    """Let go of one worker's runs and job runs (it is shutting down); returns the run ids."""
    rows = await connection.execute(
        update(workflow_runs)
        .where(workflow_runs.c.claimed_by == worker_id)
        .values(claimed_by=None, heartbeat_at=LONG_AGO)
        .returning(workflow_runs.c.id)
    )
    released = list(rows.scalars())
    await connection.execute(
        update(job_runs)
        .where(job_runs.c.claimed_by == worker_id)
        .values(claimed_by=None, heartbeat_at=LONG_AGO)
    )
    return released
