"""The orchestrator's in-memory view of a run's steps, and the changes one transaction writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apphub.domain.events import EventEnvelope
from apphub.domain.planning import StepStatus, StepView
from apphub.domain.runs import JobRun

_STEP_COLUMNS = (
    "status",
    "attempt",
    "job_run_id",
    "input",
    "output",
    "error_message",
    "failure_reason",
    "metrics",
    "retry_state",
    "next_attempt_at",
    "started_at",
    "completed_at",
)


@dataclass
class StepRecord:
    """A `workflow_run_steps` row the driver changes in memory and writes back."""

    row_id: str
    step_id: str
    status: StepStatus = "pending"
    attempt: int = 0
    job_run_id: str | None = None
    input: Any = None
    output: Any = None
    error_message: str | None = None
    failure_reason: str | None = None
    metrics: dict[str, Any] | None = None
    parent_step_id: str | None = None
    fanout_index: int | None = None
    template_step_id: str | None = None
    retry_state: str | None = None
    next_attempt_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> StepRecord:
        return cls(
            row_id=row.id,
            step_id=row.step_id,
            status=row.status,
            attempt=row.attempt,
            job_run_id=row.job_run_id,
            input=row.input,
            output=row.output,
            error_message=row.error_message,
            failure_reason=row.failure_reason,
            metrics=row.metrics,
            parent_step_id=row.parent_step_id,
            fanout_index=row.fanout_index,
            template_step_id=row.template_step_id,
            retry_state=row.retry_state,
            next_attempt_at=row.next_attempt_at,
            started_at=row.started_at,
            completed_at=row.completed_at,
        )

    def view(self) -> StepView:
        return StepView(self.status, self.next_attempt_at, self.parent_step_id, self.fanout_index)

    def changed_values(self, now: datetime) -> dict[str, Any]:
        return {column: getattr(self, column) for column in _STEP_COLUMNS} | {"updated_at": now}

    def new_row(self, run_id: str, now: datetime) -> dict[str, Any]:
        return self.changed_values(now) | {
            "id": self.row_id,
            "workflow_run_id": run_id,
            "step_id": self.step_id,
            "parent_step_id": self.parent_step_id,
            "fanout_index": self.fanout_index,
            "template_step_id": self.template_step_id,
            "created_at": now,
        }


@dataclass
class Transition:
    """Everything one orchestrator transaction writes, and the frames to send after it."""

    new_steps: list[StepRecord] = field(default_factory=list)
    changed_steps: dict[str, StepRecord] = field(default_factory=dict)
    new_job_runs: list[dict[str, Any]] = field(default_factory=list)
    job_run_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_values: dict[str, Any] = field(default_factory=dict)
    frames: list[dict[str, Any]] = field(default_factory=list)
    productions: list[dict[str, Any]] = field(default_factory=list)
    """Asset versions to record; `producing_steps` are the step rows they replace."""
    producing_steps: list[str] = field(default_factory=list)
    events: list[EventEnvelope] = field(default_factory=list)
    """Events (`asset.produced`) stored in the same transaction, processed after it."""
    waits: list[dict[str, Any]] = field(default_factory=list)
    """Steps waiting for an asset that has never been produced."""
    new_runs: list[dict[str, Any]] = field(default_factory=list)
    """Runs of other workflows to start (a producer of a missing asset)."""

    def step_changed(self, record: StepRecord) -> None:
        if all(record is not new for new in self.new_steps):
            self.changed_steps[record.row_id] = record

    def job_run_changed(self, job_run_id: str, values: dict[str, Any]) -> None:
        for row in self.new_job_runs:
            if row["id"] == job_run_id:
                row.update(values)
                return
        self.job_run_changes.setdefault(job_run_id, {}).update(values)


def job_run_view(values: dict[str, Any], job_slug: str) -> dict[str, Any]:
    """A job run row as the contract shows it (for frames)."""
    record = {
        "id": values["id"],
        "jobDefinitionId": values["job_definition_id"],
        "jobSlug": job_slug,
        "status": values["status"],
        "parameters": values.get("parameters") or {},
        "result": values.get("result"),
        "errorMessage": values.get("error_message"),
        "failureReason": values.get("failure_reason"),
        "logsTail": values.get("logs_tail"),
        "attempt": values.get("attempt", 1),
        "maxAttempts": values.get("max_attempts", 1),
        "timeoutMs": values.get("timeout_ms"),
        "context": values.get("context"),
        "createdAt": values.get("created_at"),
        "startedAt": values.get("started_at"),
        "completedAt": values.get("completed_at"),
        "durationMs": values.get("duration_ms"),
    }
    return JobRun.model_validate(record).model_dump(mode="json")
