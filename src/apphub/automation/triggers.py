"""The trigger worker (`apphub triggers`, embedded in `apphub serve`).

It is handed event ids by the ingress (queue `apphub_event_trigger_queue`; it never polls):
events are decided in micro-batches, one transaction each, and the runs they launch are
enqueued after the commit. A throttled delivery gets its next try from a durable timer, or
sooner when one of its trigger's runs ends (the run's `workflow.run.<status>` event). A
repair pass handles events whose hand-off was lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import Any

import structlog

from apphub.automation.batching import Batcher
from apphub.automation.loops import every, with_database_retries
from apphub.automation.timers import TimerService
from apphub.automation.trigger_deliveries import RETRY, Delivered, deliver, retry
from apphub.bus.frames import FramePublisher, frame
from apphub.domain.base import utc_now
from apphub.domain.trigger_rules import PauseRule
from apphub.domain.triggers import TRIGGERED_BY
from apphub.queue import JobQueue
from apphub.store import events as event_store
from apphub.store import handled as handled_store
from apphub.store import triggers as trigger_store
from apphub.store.database import Database
from apphub.store.tables import trigger_events

log = structlog.get_logger(__name__)

TRIGGER_QUEUE = "apphub_event_trigger_queue"
TIMER_QUEUE = "apphub_event_trigger_timer_queue"
RUN_ENDS = tuple(f"workflow.run.{status}" for status in ("succeeded", "failed", "canceled"))
ORCHESTRATOR = "apphub.orchestrator"
BATCH = 200
REPAIR_WINDOW = timedelta(hours=1)
REPAIR_GRACE = timedelta(seconds=10)


def wants(event_type: str) -> bool:
    """Every event: a trigger may listen to any type (the worker reads which ones do)."""
    return True


class TriggerWorker:
    def __init__(
        self,
        database: Database,
        events: JobQueue,
        workflow_queue: JobQueue,
        frames: FramePublisher,
        timers: TimerService,
        rule: PauseRule,
        *,
        repair_interval_s: float = 15.0,
        retention: timedelta = timedelta(days=30),
    ) -> None:
        self.database, self.events, self.workflow_queue = database, events, workflow_queue
        self.frames, self.timers, self.rule = frames, timers, rule
        self.repair_interval_s, self.retention = repair_interval_s, retention
        timers.on(RETRY, self._retry_timer)
        self._batcher: Batcher[str] = Batcher(self._handle_batch)

    async def run(self) -> None:
        await self.repair_once()
        async with asyncio.TaskGroup() as group:
            group.create_task(self.events.consume(self.handle, concurrency=BATCH))
            group.create_task(self.timers.run())
            group.create_task(every(self.repair_interval_s, self.repair_once, "trigger repair"))

    async def handle(self, event_id: str) -> None:
        """One handed-over event; events handed over together are decided together."""
        await self._batcher.submit(event_id)

    async def _handle_batch(self, event_ids: list[str]) -> None:
        """A database error is retried; events still undecided are left to the repair pass."""
        await with_database_retries(partial(self.handle_now, event_ids), "trigger events")

    async def handle_now(self, event_ids: Sequence[str]) -> None:
        """Decide the events in one transaction; then give the throttled deliveries of
        triggers whose runs ended their turn.

        Most events concern no trigger, and most run ends free no waiting delivery: one read
        finds that out, and no write transaction is opened for them (on SQLite a write takes
        the database's one write lock).
        """
        async with self.database.read() as connection:
            events = await event_store.by_ids(connection, event_ids)
            listened = await trigger_store.candidates(connection, {e.type for e in events})
            ended = [str(e.payload.get("workflowRunId")) for e in events if _run_end(e)]
            freed = await trigger_store.triggers_with_waiting(connection, ended) if ended else set()
        if listened:
            async with self.database.write() as connection:
                done = await deliver(connection, events, self.rule, utc_now())
            await self.announce(done)
        for trigger_id in sorted(freed):
            await self.retry_trigger(trigger_id, due_only=False)

    async def retry_trigger(self, trigger_id: str, *, due_only: bool) -> None:
        async with self.database.write() as connection:
            done = await retry(connection, trigger_id, self.rule, utc_now(), due_only=due_only)
        await self.announce(done)

    async def _retry_timer(self, timer: Any) -> None:
        await self.retry_trigger(str(timer.payload["triggerId"]), due_only=True)

    async def announce(self, done: Delivered) -> None:
        """After the commit: enqueue the runs, send their frames, log, wake the timers."""
        await announce_runs(self.workflow_queue, self.frames, done)
        for due in done.timers:
            await self.timers.wake(due)

    async def repair_once(self) -> int:
        """Events an active trigger listened to whose hand-off was lost: decide them now."""
        now = utc_now()
        async with self.database.read() as connection:
            missed = await trigger_store.unhandled_events(
                connection, (now - REPAIR_WINDOW, now - REPAIR_GRACE), 500
            )
        if missed:
            log.info("trigger worker repairs lost hand-offs", events=len(missed))
            await self._handle_batch(missed)
        async with self.database.write() as connection:
            await handled_store.prune_handled(connection, trigger_events, now - self.retention)
        return len(missed)


async def announce_runs(workflow_queue: JobQueue, frames: FramePublisher, done: Delivered) -> None:
    """Enqueue the runs deliveries launched and log every outcome (API and worker share it)."""
    for run in done.runs:
        await workflow_queue.enqueue(run.id)
    if done.runs:
        frames.publish(
            [frame("workflow.run.pending", run.model_dump(mode="json")) for run in done.runs]
        )
    for trigger_id, status, event_id in done.outcomes:
        emit = log.info if status in ("launched", "failed") else log.debug
        emit("trigger delivery", trigger_id=trigger_id, event_id=event_id, status=status)


def _run_end(event: Any) -> bool:
    """The end of a run an event trigger launched, as the orchestrator recorded it."""
    return bool(
        event.type in RUN_ENDS
        and event.source == ORCHESTRATOR
        and isinstance(event.payload, dict)
        and event.payload.get("triggeredBy") == TRIGGERED_BY
    )
