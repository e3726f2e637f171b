"""The scheduler (`apphub scheduler`, embedded in `apphub serve`): cron schedules make runs.

Each active schedule has a durable timer due at its next occurrence; the scheduler sleeps
until the earliest one (no polling) and is woken when a schedule changes (a note on the
broadcaster, from whichever process changed it). Exactly one scheduler acts per cluster
(`while_leading`: a PostgreSQL advisory lock). Firing a schedule creates the runs of its due
occurrences and moves its watermark in one transaction, so an occurrence never runs twice.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.automation.launch import insert_run
from apphub.automation.leadership import STANDBY_RETRY_S, while_leading
from apphub.automation.timers import TimerService
from apphub.bus import Broadcaster
from apphub.bus.frames import FramePublisher, frame
from apphub.domain.base import iso_ms, parse_iso, utc_now
from apphub.domain.errors import DefinitionError
from apphub.domain.requests import WorkflowRunRequest
from apphub.domain.runs import WorkflowRun
from apphub.domain.schedules import (
    TRIGGERED_BY,
    Timing,
    due_occurrences,
    next_occurrence,
    occurrence_partition,
    run_key,
)
from apphub.queue import JobQueue
from apphub.store import schedules as schedule_store
from apphub.store import timers as timer_store
from apphub.store import workflow_runs as run_store
from apphub.store import workflows as workflow_store
from apphub.store.database import Database

log = structlog.get_logger(__name__)

ROLE = "scheduler"
OCCURRENCE = "schedule.occurrence"
"""The kind of the durable timer due at a schedule's next occurrence."""
TIMER_QUEUE = "apphub_scheduler_timer_queue"
CHANNEL = "schedules"


def timing_of(row: Any) -> Timing:
    return Timing(row.cron, row.timezone, row.start_window, row.end_window, row.catch_up)


async def plan_next(
    connection: AsyncConnection, schedule_id: str, next_run_at: datetime | None, now: datetime
) -> None:
    """Point the schedule's timer at its next occurrence (or remove it: none is owed)."""
    if next_run_at is None:
        await timer_store.cancel(connection, OCCURRENCE, schedule_id)
        return
    payload = {"scheduleId": schedule_id}
    await timer_store.schedule(connection, OCCURRENCE, schedule_id, next_run_at, payload, now)


async def announce_change(broadcaster: Broadcaster, next_run_at: datetime | None) -> None:
    """Tell every scheduler process a schedule changed (after the commit)."""
    message = {"type": "schedule-changed", "due": iso_ms(next_run_at) if next_run_at else None}
    await broadcaster.publish(CHANNEL, message)


async def fire_schedule(
    connection: AsyncConnection, schedule_id: str, now: datetime
) -> tuple[list[WorkflowRun], datetime | None]:
    """Create the runs of the schedule's due occurrences; returns them and the next due time."""
    row = await schedule_store.get_schedule(connection, schedule_id, lock=True)
    if row is None or not row.is_active:
        await plan_next(connection, schedule_id, None, now)
        return [], None
    timing = timing_of(row)
    watermark = row.last_occurrence or now
    due = due_occurrences(timing, watermark, now)
    workflow = await workflow_store.get_workflow_by_id(connection, row.workflow_definition_id)
    if workflow is None:
        return [], None
    runs: list[WorkflowRun] = []
    error = row.last_error
    for occurrence in due:
        request = WorkflowRunRequest.model_validate(
            {
                "parameters": row.parameters,
                "triggeredBy": TRIGGERED_BY,
                "trigger": {
                    "type": "schedule",
                    "scheduleId": row.id,
                    "occurrence": iso_ms(occurrence),
                },
                "partitionKey": occurrence_partition(workflow.steps, occurrence),
                "runKey": run_key(row.id, occurrence),
            }
        )
        try:
            runs.append(await insert_run(connection, workflow, request))
            error = None
        except DefinitionError as problem:
            error = f"occurrence {iso_ms(occurrence)}: {problem.message}"
            log.warning("schedule occurrence not run", schedule_id=row.id, error=error)
        except run_store.RunKeyTakenError:
            continue  # this occurrence's run is already pending or running
    watermark = due[-1] if due else watermark
    next_run_at = next_occurrence(timing, watermark)
    await schedule_store.update_schedule(
        connection,
        row.id,
        {
            "last_occurrence": watermark,
            "next_run_at": next_run_at,
            "last_run_id": runs[-1].id if runs else row.last_run_id,
            "last_error": error,
        },
    )
    await plan_next(connection, row.id, next_run_at, now)
    return runs, next_run_at


class Scheduler:
    def __init__(
        self,
        database: Database,
        workflow_queue: JobQueue,
        frames: FramePublisher,
        broadcaster: Broadcaster,
        timers: TimerService,
        *,
        leadership_check_s: float = STANDBY_RETRY_S,
    ) -> None:
        self.database, self.workflow_queue = database, workflow_queue
        self.frames, self.broadcaster, self.timers = frames, broadcaster, timers
        self.leadership_check_s = leadership_check_s
        timers.on(OCCURRENCE, self._occurrence)

    async def run(self) -> None:
        """Hear schedule changes always; fire timers only while this process leads."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_changes())
            group.create_task(
                while_leading(self.database, ROLE, self.timers.run, check_s=self.leadership_check_s)
            )

    async def _follow_changes(self) -> None:
        async with self.broadcaster.subscribe(CHANNEL) as messages:
            async for message in messages:
                due = message.get("due")
                await self.timers.wake(parse_iso(due) if due else utc_now())

    async def _occurrence(self, timer: Any) -> None:
        await self.fire(str(timer.payload["scheduleId"]))

    async def fire(self, schedule_id: str) -> list[WorkflowRun]:
        async with self.database.write() as connection:
            runs, next_run_at = await fire_schedule(connection, schedule_id, utc_now())
        for run in runs:
            await self.workflow_queue.enqueue(run.id)
            log.info("schedule run", schedule_id=schedule_id, run_id=run.id, trigger=run.trigger)
        if runs:
            self.frames.publish(
                [frame("workflow.run.pending", run.model_dump(mode="json")) for run in runs]
            )
        if next_run_at is not None:
            await self.timers.wake(next_run_at)
        return runs
