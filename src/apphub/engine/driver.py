"""Drive one claimed workflow run: plan, write one transaction, start steps, collect, repeat.

Per turn of the loop the driver asks the pure `plan` what to do, lets `RunState` apply it,
and writes everything that changed (step outcomes, newly started steps, their job runs, the
run's own fields) in ONE transaction that begins by checking it still holds the run. Frames
go out after the commit. Short retry waits are slept here; longer ones release the run and
leave a delayed wake-up on the queue, so no worker sits on a waiting run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.automation.ingress import store_events
from apphub.bus import Broadcaster
from apphub.bus.frames import CONTROL_CHANNEL, frame
from apphub.domain.base import utc_now
from apphub.domain.jobs import JobDefinition
from apphub.domain.planning import Plan, plan
from apphub.domain.requests import pending_run
from apphub.domain.runs import WorkflowRun
from apphub.domain.workflows import WorkflowDefinition
from apphub.engine.asset_waits import consumed, hold, load_facts
from apphub.engine.launch import Invocation
from apphub.engine.records import Transition
from apphub.engine.run_state import RunState
from apphub.engine.runtimes import JobOutcome, run_job
from apphub.engine.service_calls import ServiceCall
from apphub.queue import JobQueue
from apphub.store import assets as asset_store
from apphub.store import job_runs as job_run_store
from apphub.store import workflow_runs as run_store
from apphub.store.database import Database

log = structlog.get_logger(__name__)

IN_PROCESS_WAIT_LIMIT_S = 1.0
"""Retry waits up to this long are slept by the driver; longer ones release the run."""


@dataclass(frozen=True)
class DriverContext:
    database: Database
    workflow_queue: JobQueue
    broadcaster: Broadcaster
    publish_frames: Callable[[Iterable[dict[str, Any]]], None]
    process_events: Callable[[Sequence[Any]], None]
    worker_id: str
    call_service: Callable[[ServiceCall], Coroutine[Any, Any, JobOutcome]]
    child_env: Mapping[str, str] = field(default_factory=dict)


class _Stop(Exception):
    """The driver is done with the run for now (finished, released, canceled, or lost)."""


class RunDriver:
    def __init__(
        self,
        context: DriverContext,
        run: Any,
        workflow: WorkflowDefinition,
        jobs: Mapping[str, JobDefinition],
        step_rows: list[Any],
    ) -> None:
        self.context = context
        self.state = RunState(run, workflow, jobs, step_rows, context.worker_id, context.child_env)
        self.tasks: dict[asyncio.Task[JobOutcome], str] = {}
        self.cancel_requested = asyncio.Event()
        self.poked = asyncio.Event()

    def force_retry(self, step_id: str) -> None:
        """An operator forced a scheduled retry: it is due now."""
        record = self.state.records.get(step_id)
        if record is not None and record.retry_state == "scheduled":
            record.next_attempt_at = utc_now()
        self.poked.set()

    def poke(self) -> None:
        """An asset this run waits for was produced: re-check waiting steps now."""
        self.state.recheck_waiting(utc_now())
        self.poked.set()

    @property
    def run_id(self) -> str:
        return self.state.run_id

    async def drive(self) -> None:
        try:
            self.state.begin(utc_now())
            while True:
                await self._turn()
        except _Stop:
            return
        except run_store.LostClaimError:
            log.warning("lost the claim on a run; another worker has it", run_id=self.run_id)
            await self._stop_tasks()
        except asyncio.CancelledError:
            await self._stop_tasks()
            raise

    async def _turn(self) -> None:
        now = utc_now()
        decision = plan(self.state.plan_steps, self.state.views(), now, self.state.max_parallel)
        held = False
        needs = consumed(self.state, decision)
        if needs:
            async with self.context.database.read() as connection:
                facts = await load_facts(connection, self.state, needs)
            checked = hold(self.state, decision, needs, facts, now)
            held, decision = checked is not decision, checked
        launches = self.state.apply(decision, now)
        if decision.outcome is not None and not self.tasks and not launches:
            self.state.finish(decision.outcome, now)
            await self._commit(now)
            raise _Stop
        if await self._commit(now):
            await self._cancel()
        for step_id, invocation in launches:
            self.tasks[asyncio.create_task(self._run(invocation))] = step_id
        if self.tasks:
            await self._collect(decision.wake_at)
        elif not held and not _progressed(decision):
            await self._wait_for(decision.wake_at, now)

    def _run(self, invocation: Invocation) -> Coroutine[Any, Any, JobOutcome]:
        if isinstance(invocation, ServiceCall):
            return self.context.call_service(invocation)
        return run_job(invocation)

    async def _collect(self, wake_at: datetime | None) -> None:
        """Wait for a step to end, the next retry to fall due, or a cancel."""
        timeout = None if wake_at is None else max(0.0, (wake_at - utc_now()).total_seconds())
        canceled: asyncio.Future[Any] = asyncio.ensure_future(self.cancel_requested.wait())
        poked: asyncio.Future[Any] = asyncio.ensure_future(self.poked.wait())
        waiting: list[asyncio.Future[Any]] = [*self.tasks, canceled, poked]
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        canceled.cancel()
        poked.cancel()
        self.poked.clear()
        if self.cancel_requested.is_set():
            await self._cancel()
        now = utc_now()
        for task in [task for task in self.tasks if task.done()]:
            step_id = self.tasks.pop(task)
            self.state.record(step_id, _outcome_of(task), now)

    async def _wait_for(self, wake_at: datetime | None, now: datetime) -> None:
        if wake_at is None:
            raise RuntimeError(f"run {self.run_id} has nothing to run and nothing to wait for")
        delay = (wake_at - now).total_seconds()
        if delay > IN_PROCESS_WAIT_LIMIT_S:
            await self._release(wake_at)
            raise _Stop
        try:
            await asyncio.wait_for(self.cancel_requested.wait(), timeout=max(delay, 0.0))
        except TimeoutError:
            return
        await self._cancel()

    async def _commit(self, now: datetime, *, wake_at: datetime | None = None) -> bool:
        """Write the transition in one transaction; True when the run has a cancel request.

        With `wake_at`, the run is also released until then (the reconciler's due time).
        """
        change, values = self.state.take_change()
        if wake_at is not None:
            values |= {"claimed_by": None, "wake_at": wake_at}
        async with self.context.database.write() as connection:
            cancel_requested_at = await run_store.fence_workflow_run(
                connection, self.run_id, self.context.worker_id, now, values
            )
            await run_store.insert_steps(
                connection, [record.new_row(self.run_id, now) for record in change.new_steps]
            )
            await run_store.update_steps(
                connection,
                [
                    record.changed_values(now) | {"row_id": row_id}
                    for row_id, record in change.changed_steps.items()
                ],
            )
            await job_run_store.insert_job_runs(connection, change.new_job_runs)
            await job_run_store.update_job_runs(
                connection,
                [
                    changes | {"job_run_id": job_run_id}
                    for job_run_id, changes in change.job_run_changes.items()
                ],
            )
            woken = await self._write_assets(connection, change, now)
            started = await self._start_runs(connection, change)
            events = await store_events(connection, change.events, now)
        self.state.committed(values)
        if change.frames:
            self.context.publish_frames(change.frames)
        self.context.process_events(events)
        await self._wake(woken, started)
        return cancel_requested_at is not None and self.state.active

    async def _write_assets(
        self, connection: AsyncConnection, change: Transition, now: datetime
    ) -> list[str]:
        """Productions, cleared stale marks, new waits; returns the runs the productions wake."""
        await asset_store.record_productions(connection, change.producing_steps, change.productions)
        await asset_store.add_waits(connection, change.waits)
        if not change.productions:
            return []
        await asset_store.clear_stale_for(connection, change.productions)
        produced = [(row["asset_key"], row["partition_key"]) for row in change.productions]
        return await asset_store.wake_waiting(connection, produced, now)

    async def _start_runs(
        self, connection: AsyncConnection, change: Transition
    ) -> list[WorkflowRun]:
        """Runs of other workflows this transition asks for; one already active is kept."""
        started = []
        for values in change.new_runs:
            row = {k: v for k, v in values.items() if k not in ("asset_key", "workflow_slug")}
            try:
                await run_store.insert_workflow_run(connection, row)
            except run_store.RunKeyTakenError:
                continue
            started.append(pending_run(row, values["workflow_slug"]))
        return started

    async def _wake(self, woken: list[str], started: list[WorkflowRun]) -> None:
        for run in started:
            await self.context.workflow_queue.enqueue(run.id)
        if started:
            self.context.publish_frames(
                [frame("workflow.run.pending", run.model_dump(mode="json")) for run in started]
            )
        for run_id in woken:
            if run_id == self.run_id:
                self.poke()
                continue
            await self.context.workflow_queue.enqueue(run_id)
            await self.context.broadcaster.publish(
                CONTROL_CHANNEL, {"type": "wake-run", "runId": run_id}
            )

    async def _release(self, wake_at: datetime) -> None:
        await self._commit(utc_now(), wake_at=wake_at)
        delay = max(0.0, (wake_at - utc_now()).total_seconds())
        key = f"{self.run_id}:wake:{int(wake_at.timestamp() * 1000)}"
        await self.context.workflow_queue.enqueue(self.run_id, key=key, delay_s=delay)

    async def _cancel(self) -> None:
        await self._stop_tasks()
        now = utc_now()
        self.state.cancel(now)
        await self._commit(now)
        raise _Stop

    async def _stop_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


def _progressed(decision: Plan) -> bool:
    return bool(
        decision.start or decision.start_children or decision.skip or decision.finish_fanouts
    )


def _outcome_of(task: asyncio.Task[JobOutcome]) -> JobOutcome:
    if task.cancelled():
        return JobOutcome(status="failed", error_message="canceled", failure_reason="canceled")
    error = task.exception()
    if error is not None:
        log.error("job runtime raised", error=repr(error))
        return JobOutcome(
            status="failed",
            error_message=f"internal error: {error}",
            failure_reason="internal-error",
        )
    return task.result()
