"""Run records: job runs, workflow runs and their steps, as stored and served."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from apphub.domain.base import ApiModel, JsonObject, UtcTime

JobRunStatus = Literal["pending", "running", "succeeded", "failed", "canceled", "expired"]
WorkflowRunStatus = Literal["pending", "running", "succeeded", "failed", "canceled"]
StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "canceled"]

ACTIVE_RUN_STATUSES: tuple[str, ...] = ("pending", "running")
TERMINAL_RUN_STATUSES: tuple[str, ...] = ("succeeded", "failed", "canceled", "expired")


class Record(ApiModel):
    """A stored row as served: internal columns (claims, heartbeats) are left out."""

    model_config = ConfigDict(extra="ignore")


class JobRun(Record):
    id: str
    job_definition_id: str
    job_slug: str
    status: JobRunStatus
    parameters: JsonObject
    result: Any = None
    error_message: str | None = None
    failure_reason: str | None = None
    logs_tail: str | None = None
    attempt: int
    max_attempts: int
    timeout_ms: int | None = None
    context: JsonObject | None = None
    created_at: UtcTime
    started_at: UtcTime | None = None
    completed_at: UtcTime | None = None
    duration_ms: int | None = None


class RunMetrics(Record):
    total_steps: int = 0
    completed_steps: int = 0


class WorkflowRun(Record):
    id: str
    workflow_definition_id: str
    workflow_slug: str
    status: WorkflowRunStatus
    parameters: JsonObject
    context: JsonObject = Field(default_factory=lambda: {"shared": {}, "steps": {}})
    output: Any = None
    error_message: str | None = None
    current_step_id: str | None = None
    metrics: RunMetrics = Field(default_factory=RunMetrics)
    triggered_by: str | None = None
    trigger: JsonObject | None = None
    partition_key: str | None = None
    run_key: str | None = None
    created_at: UtcTime
    started_at: UtcTime | None = None
    completed_at: UtcTime | None = None
    duration_ms: int | None = None


class WorkflowRunStep(Record):
    id: str
    workflow_run_id: str
    step_id: str
    status: StepStatus
    attempt: int
    job_run_id: str | None = None
    input: Any = None
    output: Any = None
    error_message: str | None = None
    failure_reason: str | None = None
    metrics: JsonObject | None = None
    parent_step_id: str | None = None
    fanout_index: int | None = None
    template_step_id: str | None = None
    retry_state: str | None = None
    next_attempt_at: UtcTime | None = None
    started_at: UtcTime | None = None
    completed_at: UtcTime | None = None
