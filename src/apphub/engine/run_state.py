"""A run in memory: its step records, and the rules that change them (no I/O, no waiting).

The driver asks the planner what to do, and `RunState` applies it: starts steps, records
outcomes and retries, runs fan-outs, finishes or cancels the run. Every change lands in the
pending `Transition`, which the driver writes in one transaction.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from apphub.bus.frames import frame
from apphub.domain.capture import capture_assets
from apphub.domain.jobs import JobDefinition
from apphub.domain.planning import Plan, PlanStep, StepStatus, StepView, after_failure
from apphub.domain.workflows import FanoutStep, WorkflowDefinition
from apphub.engine.assets import RunIdentity, produced_event, production_row
from apphub.engine.launch import Invocation, Launcher, StepSpec
from apphub.engine.records import StepRecord, Transition, job_run_view
from apphub.engine.run_events import announces_end, run_ended_event
from apphub.engine.runtimes import JobOutcome
from apphub.store.rows import new_id

DEFAULT_MAX_PARALLEL = 16
WAITING_FOR_ASSET = "waiting-for-asset"
ORPHANED = "the worker running this step stopped heartbeating"


class RunState:
    def __init__(
        self,
        run: Any,
        workflow: WorkflowDefinition,
        jobs: Mapping[str, JobDefinition],
        step_rows: list[Any],
        worker_id: str,
        child_env: Mapping[str, str] | None = None,
    ) -> None:
        self.run_id: str = run.id
        self.workflow = workflow
        self.status: str = run.status
        self.started_at: datetime | None = run.started_at
        self.persisted: dict[str, Any] = {"status": run.status, "started_at": run.started_at}
        self.shared: dict[str, Any] = dict((run.context or {}).get("shared", {}))
        self.records = {row.step_id: StepRecord.from_row(row) for row in step_rows}
        self.launcher = Launcher(run, workflow, jobs, worker_id, child_env)
        self.identity = RunIdentity(workflow.id, workflow.slug, run.id, run.run_key)
        self.plan_steps = _plan_steps(workflow)
        self.max_parallel = _max_parallel(workflow)
        self.change = Transition()

    @property
    def partition_key(self) -> str | None:
        key: str | None = self.launcher.run.partition_key
        return key

    @property
    def active(self) -> bool:
        return self.status in ("pending", "running")

    # --- beginning --------------------------------------------------------------------------

    def begin(self, now: datetime) -> None:
        """Mark the run running, create missing step rows, and settle orphaned steps."""
        if self.status == "pending":
            self.status = "running"
            self.started_at = now
            self.change.run_values |= {"status": "running", "started_at": now}
            self.change.frames.append(frame("workflow.run.running", self.run_view()))
        for step in self.workflow.steps:
            if step.id not in self.records:
                record = StepRecord(row_id=new_id(), step_id=step.id)
                self.records[step.id] = record
                self.change.new_steps.append(record)
        self.recheck_waiting(now)
        for record in list(self.records.values()):
            if record.status == "running" and not self._is_fanout(record):
                orphaned = JobOutcome(
                    status="failed", error_message=ORPHANED, failure_reason="heartbeat-timeout"
                )
                self.record(record.step_id, orphaned, now)

    def recheck_waiting(self, now: datetime) -> None:
        """Steps waiting for an asset are due for another look (the asset may exist now)."""
        for record in self.records.values():
            if record.retry_state == WAITING_FOR_ASSET and record.status == "pending":
                record.next_attempt_at = now

    # --- applying a plan ----------------------------------------------------------------------

    def apply(self, decision: Plan, now: datetime) -> list[tuple[str, Invocation]]:
        """Apply the planner's answer; returns the job runs and service calls to start."""
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

    def _start(self, record: StepRecord, now: datetime) -> Invocation | None:
        spec, extra_scope = self.spec_of(record)
        self.change.run_values["current_step_id"] = record.step_id
        if isinstance(spec, FanoutStep):
            self._start_fanout(record, spec, now)
            return None
        started = self.launcher.start(record, spec, self.scope(extra_scope), now)
        self.change.step_changed(record)
        if started.job_run is not None:
            self.change.new_job_runs.append(started.job_run)
            self.change.frames.append(
                frame("job.run.running", job_run_view(started.job_run, started.job_slug))
            )
        if started.failure is not None:
            self.record(record.step_id, started.failure, now)
            return None
        return started.invocation

    def _start_fanout(self, record: StepRecord, spec: FanoutStep, now: datetime) -> None:
        items, failure = self.launcher.fanout_items(spec, self.scope(None))
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
        spec = self.launcher.specs[record.step_id]
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
            self._share(spec.store_results_as, results)
        if outcome == "failed":
            failed = sum(1 for child in children if child.status != "succeeded")
            record.error_message = f"{failed} of {len(children)} fan-out children failed"
            record.failure_reason = "children-failed"
        self._settle(record, "succeeded" if outcome == "succeeded" else "failed", now)

    # --- outcomes ---------------------------------------------------------------------------

    def record(self, step_id: str, outcome: JobOutcome, now: datetime) -> None:
        """A step attempt ended: success, a scheduled retry, or failure for good."""
        record = self.records[step_id]
        if record.job_run_id is not None:
            self._close_job_run(record, outcome, now)
        if outcome.status == "succeeded":
            outcome = self._capture(record, outcome, now)
        if outcome.status == "succeeded":
            record.output = outcome.result
            record.error_message = record.failure_reason = None
            spec = self.launcher.specs[step_id] if record.parent_step_id is None else None
            key = getattr(spec, "store_result_as", None) or getattr(spec, "store_response_as", None)
            if key:
                self._share(key, outcome.result)
            self._settle(record, "succeeded", now)
            return
        record.error_message = outcome.error_message
        record.failure_reason = outcome.failure_reason
        spec, _ = self.spec_of(record)
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

    def _capture(self, record: StepRecord, outcome: JobOutcome, now: datetime) -> JobOutcome:
        """Record the assets the result declares; a bad one turns success into failure."""
        spec, _ = self.spec_of(record)
        produces = getattr(spec, "produces", [])
        capture = capture_assets(produces, outcome.result, self.launcher.run.partition_key, now)
        if capture.error is not None:
            return JobOutcome(
                status="failed",
                result=outcome.result,
                error_message=capture.error,
                failure_reason="invalid-asset",
            )
        job_slug = getattr(spec, "job_slug", None)
        for production in capture.productions:
            self.change.productions.append(production_row(self.identity, record, production, now))
            self.change.events.append(produced_event(self.identity, record, production, job_slug))
        if produces:  # what an earlier attempt of this step recorded is replaced
            self.change.producing_steps.append(record.row_id)
        notes: dict[str, Any] = {}
        if capture.productions:
            notes["assets"] = [
                {"assetId": p.asset_id, "partitionKey": p.partition_key}
                for p in capture.productions
            ]
        if capture.undeclared:
            notes["undeclaredAssets"] = capture.undeclared
        if notes:
            record.metrics = (record.metrics or {}) | notes
        return outcome

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

    def _settle(self, record: StepRecord, status: StepStatus, now: datetime) -> None:
        record.status = status
        record.retry_state = None
        record.next_attempt_at = None
        record.completed_at = now
        self.change.step_changed(record)

    def _share(self, key: str, value: Any) -> None:
        self.shared[key] = value
        self.change.run_values["context"] = {"shared": self.shared}

    # --- ending -------------------------------------------------------------------------------

    def finish(self, outcome: str, now: datetime) -> None:
        self.status = outcome
        failed = next(
            (self.records[s.id] for s in self.plan_steps if self.records[s.id].status == "failed"),
            None,
        )
        error = None
        if failed is not None:
            error = f"step {failed.step_id!r} failed: {failed.error_message or 'failed'}"
        self._end({"status": outcome, "output": self._output(), "error_message": error}, now)

    def cancel(self, now: datetime) -> None:
        """Mark every pending and running step canceled (the driver stopped their tasks)."""
        for record in self.records.values():
            if record.status in ("pending", "running"):
                if record.job_run_id is not None and record.status == "running":
                    outcome = JobOutcome(
                        status="failed", error_message="canceled", failure_reason="canceled"
                    )
                    self._close_job_run(record, outcome, now, status="canceled")
                self._settle(record, "canceled", now)
        self.status = "canceled"
        self._end({"status": "canceled", "error_message": "canceled"}, now)

    def _end(self, values: dict[str, Any], now: datetime) -> None:
        duration = None
        if self.started_at is not None:
            duration = int((now - self.started_at).total_seconds() * 1000)
        self.change.run_values |= values | {
            "completed_at": now,
            "duration_ms": duration,
            "current_step_id": None,
            "claimed_by": None,
        }
        self.change.frames.append(frame(f"workflow.run.{values['status']}", self.run_view()))
        run = self.launcher.run
        if announces_end(run):
            ended = run_ended_event(run, values["status"], self.workflow.slug, self.started_at, now)
            self.change.events.append(ended)

    def _output(self) -> Any:
        """The run's output: its shared context, else the last succeeded step's result."""
        if self.shared:
            return self.shared
        for step in reversed(self.plan_steps):
            record = self.records[step.id]
            if record.status == "succeeded":
                return record.output
        return None

    # --- handing over to the transaction ------------------------------------------------------

    def take_change(self) -> tuple[Transition, dict[str, Any]]:
        """The pending transition and the run fields to write with it; starts a new one."""
        change, self.change = self.change, Transition()
        return change, change.run_values | {"metrics": self.metrics()}

    def committed(self, values: Mapping[str, Any]) -> None:
        self.persisted |= values

    # --- views --------------------------------------------------------------------------------

    def views(self) -> dict[str, StepView]:
        return {step_id: record.view() for step_id, record in self.records.items()}

    def scope(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        """What templates may read: parameters, run, steps, shared (+ fan-out item)."""
        steps = {
            step_id: {"result": record.output, "output": record.output, "status": record.status}
            for step_id, record in self.records.items()
        }
        scope = self.launcher.base_scope() | {"steps": steps, "shared": self.shared}
        return scope | dict(extra or {})

    def spec_of(self, record: StepRecord) -> tuple[StepSpec, Mapping[str, Any] | None]:
        if record.parent_step_id is None:
            spec: StepSpec = self.launcher.specs[record.step_id]
            return spec, None
        parent = self.launcher.specs[record.parent_step_id]
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

    def metrics(self) -> dict[str, int]:
        ended = sum(1 for r in self.records.values() if r.status not in ("pending", "running"))
        return {"totalSteps": len(self.records), "completedSteps": ended}

    def run_view(self) -> dict[str, Any]:
        state = self.persisted | self.change.run_values
        steps = {
            step_id: {"status": record.status, "result": record.output}
            for step_id, record in self.records.items()
        }
        return self.launcher.run_view(state, self.metrics(), self.shared, steps)


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
