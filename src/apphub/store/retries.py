"""What an operator may do to a durable retry that waits for its time: the rows it touches.

Deferred events (`workflow_events`, status deferred) and workflow steps with a retry
scheduled (`workflow_run_steps`, retry_state scheduled); trigger deliveries live in
`store/triggers.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.store.events import DEFERRED, PROCESSING
from apphub.store.tables import workflow_events, workflow_run_steps, workflow_runs

CANCELED = "canceled"
"""A deferred event an operator gave up: stored, never handed to subscribers."""


async def event(connection: AsyncConnection, event_id: str) -> Any:
    query = select(workflow_events).where(workflow_events.c.id == event_id).with_for_update()
    return (await connection.execute(query)).first()


async def claim_deferred(connection: AsyncConnection, seq: int, now: datetime) -> Any:
    """Take a deferred event to process now (as the deferred-event loop would); None if it
    is no longer deferred."""
    result = await connection.execute(
        update(workflow_events)
        .where(workflow_events.c.seq == seq, workflow_events.c.status == DEFERRED)
        .values(status=PROCESSING, available_at=now)
        .returning(workflow_events)
    )
    return result.first()


async def cancel_deferred(connection: AsyncConnection, seq: int) -> bool:
    result = await connection.execute(
        update(workflow_events)
        .where(workflow_events.c.seq == seq, workflow_events.c.status == DEFERRED)
        .values(status=CANCELED, available_at=None)
    )
    return result.rowcount == 1


async def step(connection: AsyncConnection, step_row_id: str) -> Any:
    """A step and whether a worker holds its run (`claimed_by`), both rows locked."""
    steps, runs = workflow_run_steps, workflow_runs
    query = (
        select(steps, runs.c.claimed_by, runs.c.status.label("run_status"))
        .join(runs, runs.c.id == steps.c.workflow_run_id)
        .where(steps.c.id == step_row_id)
        .with_for_update()
    )
    return (await connection.execute(query)).first()


async def change_step(
    connection: AsyncConnection, row: Any, values: dict[str, Any], now: datetime
) -> None:
    """Change a waiting step and make its run due now (a released run waits for `wake_at`)."""
    await connection.execute(
        update(workflow_run_steps)
        .where(workflow_run_steps.c.id == row.id)
        .values(values | {"updated_at": now})
    )
    await connection.execute(
        update(workflow_runs)
        .where(workflow_runs.c.id == row.workflow_run_id, workflow_runs.c.claimed_by.is_(None))
        .values(wake_at=now)
    )
