"""Drive one claimed workflow run: plan, write one transaction, start steps, collect, repeat.

Per turn of the loop the driver asks the pure `plan` what to do, applies it to its in-memory
records, and writes everything that changed (step outcomes, newly started steps, their job
runs, the run's own fields) in ONE transaction that begins by checking it still holds the
run. Frames go out after the commit. Short retry waits are slept here; longer ones release
the run and leave a delayed wake-up on the queue, so no worker sits on a waiting run.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from apphub.domain.base import utc_now
from apphub.domain.jobs import JobDefinition
from apphub.domain.planning import Plan, PlanStep, after_failure, plan
from apphub.domain.workflows import FanoutStep, WorkflowDefinition
from apphub.engine.frames import frame
from apphub.engine.launch import Launcher, StepSpec
from apphub.engine.records import StepRecord, Transition, job_run_view
from apphub.engine.runtimes import JobOutcome, run_job
from apphub.queue import JobQueue
from apphub.store import runs as run_store
from apphub.store.database import Database
from apphub.store.rows import new_id

log = structlog.get_logger(__name__)

DEFAULT_MAX_PARALLEL = 16
IN_PROCESS_WAIT_LIMIT_S = 1.0
"""Retry waits up to this long are slept by the driver; longer ones release the run."""


@dataclass(frozen=True)
class DriverContext:
    database: Database
    workflow_queue: JobQueue
    publish_frames: Any
    worker_id: str


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
        self.run_id: str = run.id
        self.workflow = workflow
        self.status: str = run.status
        self.started_at: datetime | None = run.started_at
        self.run_state: dict[str, Any] = {"status": run.status, "started_at": run.started_at}
        self.shared: dict[str, Any] = dict((run.context or {}).get("shared", {}))
        self.records = {row.step_id: StepRecord.from_row(row) for row in step_rows}
        self.launcher = Launcher(run, workflow, jobs, context.worker_id)
        self.plan_steps = _plan_steps(workflow)
        self.max_parallel = _max_parallel(workflow)
        self.tasks: dict[asyncio.Task[JobOutcome], str] = {}
        self.change = Transition()
        self.cancel_requested = asyncio.Event()

    # --- the loop ------------------------------------------------------------------------

    async def drive(self) -> None:
        try:
            self._begin(utc_now())
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
        decision = plan(self.plan_steps, self._views(), now, self.max_parallel)
        launches = self._apply(decision, now)
        if decision.outcome is not None and not self.tasks and not launches:
            self._finish(decision.outcome, now)
            await self._commit(now)
            raise _Stop
        if await self._commit(now):
            await self._cancel()
        for step_id, invocation in launches:
            self.tasks[asyncio.create_task(run_job(invocation))] = step_id
        if self.tasks:
            await self._collect(decision.wake_at)
        elif not _progressed(decision):
            await self._wait_for(decision.wake_at, now)

    async def _collect(self, wake_at: datetime | None) -> None:
        timeout = None if wake_at is None else max(0.0, (wake_at - utc_now()).total_seconds())
        canceled: asyncio.Future[Any] = asyncio.ensure_future(self.cancel_requested.wait())
        waiting: list[asyncio.Future[Any]] = [*self.tasks, canceled]
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        canceled.cancel()
        if self.cancel_requested.is_set():
            await self._cancel()
        now = utc_now()
        for task in [task for task in self.tasks if task.done()]:
            step_id = self.tasks.pop(task)
            self._record(step_id, _outcome_of(task), now)

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

    # --- applying a plan ---------------------------------------------------------------------

    def _begin(self, now: datetime) -> None:
        if self.status == "pending":
            self.status = "running"
            self.started_at = now
            self.change.run_values |= {"status": "running", "started_at": now}
            self.change.frames.append(frame("workflow.run.running", self._run_view()))
        for step in self.workflow.steps:
            if step.id not in self.records:
                record = StepRecord(row_id=new_id(), step_id=step.id)
                self.records[step.id] = record
                self.change.new_steps.append(record)
        for record in list(self.records.values()):
            if record.status == "running" and not self._is_fanout(record):
                self._recover_orphan(record, now)

    def _recover_orphan(self, record: StepRecord, now: datetime) -> None:
        """A step left running by a worker that died: another attempt, or failed for good."""
        message = "the worker running this step stopped heartbeating"
        outcome = JobOutcome(
            status="failed", error_message=message, failure_reason="heartbeat-timeout"
        )
        self._record(record.step_id, outcome, now)

    def _apply(self, decision: Plan, now: datetime) -> list[tuple[str, Any]]:
        for step_id in decision.skip:
            self._settle(self.records[step_id], "skipped", now)
        for step_id, outcome in decision.finish_fanouts.items():
            self._finish_fanout(self.records[step_id], outcome, now)
        launches = []
        for step_id in (*decision.start, *decision.start_children):
            invocation = self._start(self.records[step_id], now)
            if invocation is not None:
                launches.append((step_id, invocation))
        return launches

    def _start(self, record: StepRecord, now: datetime) -> Any:
        spec, extra_scope = self._spec_of(record)
        self.change.run_values["current_step_id"] = record.step_id
        if isinstance(spec, FanoutStep):
            self._start_fanout(record, spec, now)
            return None
        started = self.launcher.start(record, spec, self._scope(extra_scope), now)
        self.change.step_changed(record)
        if started.job_run is not None:
            self.change.new_job_runs.append(started.job_run)
            self.change.frames.append(
                frame("job.run.running", job_run_view(started.job_run, started.job_slug))
            )
        if started.failure is not None:
            self._record(record.step_id, started.failure, now)
            return None
        return started.invocation

    def _start_fanout(self, record: StepRecord, spec: FanoutStep, now: datetime) -> None:
        items, failure = self.launcher.fanout_items(spec, self._scope(None))
        record.attempt += 1
        record.started_at = now
        record.input = {"items": items}
        if failure is not None:
            record.error_message, record.failure_reason = failure, "invalid-collection"
            self._settle(record, "failed", now)
            return
        record.status = "running"
        self.change.step_changed(record)
        for index, _ in enumerate(items):
            child = StepRecord(
                row_id=new_id(),
                step_id=f"{spec.id}:{spec.template.id}:{index + 1}",
                parent_step_id=spec.id,
                fanout_index=index,
                template_step_id=spec.template.id,
            )
            self.records[child.step_id] = child
            self.change.new_steps.append(child)
        if not items:
            self._finish_fanout(record, "succeeded", now)

    def _finish_fanout(self, record: StepRecord, outcome: str, now: datetime) -> None:
        spec = self._top_spec(record.step_id)
        assert isinstance(spec, FanoutStep)
        items = (record.input or {}).get("items", [])
        children = sorted(
            (child for child in self.records.values() if child.parent_step_id == record.step_id),
            key=lambda child: child.fanout_index or 0,
        )
        results = [
            {
                "stepId": child.step_id,
                "index": child.fanout_index,
                "status": child.status,
                "output": child.output,
                "errorMessage": child.error_message,
                "item": items[child.fanout_index or 0] if items else None,
            }
            for child in children
        ]
        record.output = results
        if spec.store_results_as:
            self.shared[spec.store_results_as] = results
            self.change.run_values["context"] = {"shared": self.shared}
        if outcome == "failed":
            failed = sum(1 for child in children if child.status != "succeeded")
            record.error_message = f"{failed} of {len(children)} fan-out children failed"
            record.failure_reason = "children-failed"
        self._settle(record, "succeeded" if outcome == "succeeded" else "failed", now)

    # --- outcomes ---------------------------------------------------------------------------

    def _record(self, step_id: str, outcome: JobOutcome, now: datetime) -> None:
        record = self.records[step_id]
        if record.job_run_id is not None:
            self._close_job_run(record, outcome, now)
        if outcome.status == "succeeded":
            record.output = outcome.result
            record.error_message = record.failure_reason = None
            spec = self._top_spec(step_id) if record.parent_step_id is None else None
            key = getattr(spec, "store_result_as", None) or getattr(spec, "store_response_as", None)
            if key:
                self.shared[key] = outcome.result
                self.change.run_values["context"] = {"shared": self.shared}
            self._settle(record, "succeeded", now)
            return
        record.error_message = outcome.error_message
        record.failure_reason = outcome.failure_reason
        spec, _ = self._spec_of(record)
        policy = self.launcher.retry_policy(spec)
        next_try = after_failure(
            policy, record.attempt, outcome.failure_reason, now, random.random()
        )
        if next_try.retry:
            record.status = "pending"
            record.retry_state = "scheduled"
            record.next_attempt_at = next_try.next_attempt_at
            self.change.step_changed(record)
        else:
            self._settle(record, "failed", now)

    def _close_job_run(
        self, record: StepRecord, outcome: JobOutcome, now: datetime, status: str | None = None
    ) -> None:
        assert record.job_run_id is not None
        status = status or outcome.status
        values = {
            "status": status,
            "result": outcome.result,
            "error_message": outcome.error_message,
            "failure_reason": outcome.failure_reason,
            "logs_tail": outcome.logs_tail or None,
            "completed_at": now,
            "duration_ms": outcome.duration_ms,
            "claimed_by": None,
            "updated_at": now,
        }
        self.change.job_run_changed(record.job_run_id, values)
        started = self.launcher.started_job_runs.pop(record.job_run_id, None)
        if started is not None:
            view = job_run_view(started | values, started["job_slug"])
            self.change.frames.append(frame(f"job.run.{status}", view))

    def _settle(self, record: StepRecord, status: Any, now: datetime) -> None:
        record.status = status
        record.retry_state = None
        record.next_attempt_at = None
        record.completed_at = now
        self.change.step_changed(record)

    def _finish(self, outcome: str, now: datetime) -> None:
        self.status = outcome
        failed = next(
            (self.records[s.id] for s in self.plan_steps if self.records[s.id].status == "failed"),
            None,
        )
        error = None
        if failed is not None:
            error = f"step {failed.step_id!r} failed: {failed.error_message or 'failed'}"
        self.change.run_values |= {
            "status": outcome,
            "output": self._output(),
            "error_message": error,
            "completed_at": now,
            "duration_ms": _duration_ms(self.started_at, now),
            "current_step_id": None,
            "claimed_by": None,
        }
        self.change.frames.append(frame(f"workflow.run.{outcome}", self._run_view()))

    def _output(self) -> Any:
        """The run's output: its shared context, else the last succeeded step's result."""
        if self.shared:
            return self.shared
        for step in reversed(self.plan_steps):
            record = self.records[step.id]
            if record.status == "succeeded":
                return record.output
        return None

    # --- persistence --------------------------------------------------------------------------

    async def _commit(self, now: datetime, *, release: bool = False) -> bool:
        """Write the transition in one transaction; True when the run has a cancel request."""
        change, self.change = self.change, Transition()
        values = change.run_values | {"metrics": self._metrics()}
        if release:
            values["claimed_by"] = None
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
            await run_store.insert_job_runs(connection, change.new_job_runs)
            await run_store.update_job_runs(
                connection,
                [
                    values | {"job_run_id": run_id}
                    for run_id, values in change.job_run_changes.items()
                ],
            )
        self.run_state |= values
        if change.frames:
            self.context.publish_frames(change.frames)
        return cancel_requested_at is not None and self.status in ("pending", "running")

    async def _release(self, wake_at: datetime) -> None:
        await self._commit(utc_now(), release=True)
        delay = max(0.0, (wake_at - utc_now()).total_seconds())
        key = f"{self.run_id}:wake:{int(wake_at.timestamp() * 1000)}"
        await self.context.workflow_queue.enqueue(self.run_id, key=key, delay_s=delay)

    async def _cancel(self) -> None:
        await self._stop_tasks()
        now = utc_now()
        for record in self.records.values():
            if record.status in ("pending", "running"):
                if record.job_run_id is not None and record.status == "running":
                    outcome = JobOutcome(
                        status="failed", error_message="canceled", failure_reason="canceled"
                    )
                    self._close_job_run(record, outcome, now, status="canceled")
                self._settle(record, "canceled", now)
        self.status = "canceled"
        self.change.run_values |= {
            "status": "canceled",
            "error_message": "canceled",
            "completed_at": now,
            "duration_ms": _duration_ms(self.started_at, now),
            "claimed_by": None,
            "current_step_id": None,
        }
        self.change.frames.append(frame("workflow.run.canceled", self._run_view()))
        await self._commit(now)
        raise _Stop

    async def _stop_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    # --- views ------------------------------------------------------------------------------

    def _views(self) -> dict[str, Any]:
        return {step_id: record.view() for step_id, record in self.records.items()}

    def _scope(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        steps = {
            step_id: {"result": record.output, "output": record.output, "status": record.status}
            for step_id, record in self.records.items()
        }
        scope = self.launcher.base_scope() | {"steps": steps, "shared": self.shared}
        return scope | dict(extra or {})

    def _top_spec(self, step_id: str) -> Any:
        return self.launcher.specs[step_id]

    def _spec_of(self, record: StepRecord) -> tuple[StepSpec, Mapping[str, Any] | None]:
        if record.parent_step_id is None:
            return self._top_spec(record.step_id), None
        parent = self._top_spec(record.parent_step_id)
        items = (self.records[record.parent_step_id].input or {}).get("items", [])
        index = record.fanout_index or 0
        item = items[index] if index < len(items) else None
        fanout = {
            "index": index,
            "item": item,
            "parentStepId": record.parent_step_id,
            "templateStepId": parent.template.id,
        }
        return parent.template, {"fanout": fanout, "item": item}

    def _is_fanout(self, record: StepRecord) -> bool:
        return record.parent_step_id is None and isinstance(
            self.launcher.specs.get(record.step_id), FanoutStep
        )

    def _metrics(self) -> dict[str, int]:
        ended = sum(1 for r in self.records.values() if r.status not in ("pending", "running"))
        return {"totalSteps": len(self.records), "completedSteps": ended}

    def _run_view(self) -> dict[str, Any]:
        state = self.run_state | self.change.run_values
        steps = {
            step_id: {"status": record.status, "result": record.output}
            for step_id, record in self.records.items()
        }
        return self.launcher.run_view(state, self._metrics(), self.shared, steps)


def _plan_steps(workflow: WorkflowDefinition) -> list[PlanStep]:
    by_id = {step.id: step for step in workflow.steps}
    planned = []
    for step_id in workflow.dag.topological_order:
        step = by_id[step_id]
        limit = step.max_concurrency if isinstance(step, FanoutStep) else None
        planned.append(PlanStep(step_id, tuple(step.depends_on), limit))
    return planned


def _max_parallel(workflow: WorkflowDefinition) -> int:
    scheduler = (workflow.metadata or {}).get("scheduler") or {}
    limit = scheduler.get("maxParallel")
    return limit if isinstance(limit, int) else DEFAULT_MAX_PARALLEL


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


def _duration_ms(started_at: datetime | None, now: datetime) -> int | None:
    return None if started_at is None else int((now - started_at).total_seconds() * 1000)
