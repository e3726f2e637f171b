"""Turn a ready step into something to run: parameters, its job run row, the runtime call."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apphub.domain.base import iso_ms
from apphub.domain.jobs import JobDefinition
from apphub.domain.parameters import merge_parameters, parameter_problems
from apphub.domain.retry import RetryPolicy
from apphub.domain.runs import WorkflowRun
from apphub.domain.services import DEFAULT_SERVICE_TIMEOUT_MS, masked_headers
from apphub.domain.templates import render
from apphub.domain.workflows import (
    FanoutStep,
    JobStep,
    JobTemplate,
    SecretHeader,
    ServiceStep,
    ServiceTemplate,
    WorkflowDefinition,
)
from apphub.engine.records import StepRecord
from apphub.engine.runtimes import JobInvocation, JobOutcome
from apphub.engine.service_calls import ServiceCall
from apphub.store.rows import new_id

StepSpec = JobStep | ServiceStep | FanoutStep | JobTemplate | ServiceTemplate
Invocation = JobInvocation | ServiceCall
"""What a started step runs: a job in a runtime, or a call to a registered service."""


@dataclass(frozen=True)
class Started:
    """A step that was started: what to run, or why it failed before running."""

    invocation: Invocation | None = None
    job_run: dict[str, Any] | None = None
    job_slug: str = ""
    failure: JobOutcome | None = None


class Launcher:
    def __init__(
        self,
        run: Any,
        workflow: WorkflowDefinition,
        jobs: Mapping[str, JobDefinition],
        worker_id: str,
        child_env: Mapping[str, str] | None = None,
    ) -> None:
        self.run = run
        self.child_env = dict(child_env or {})
        self.workflow = workflow
        self.jobs = jobs
        self.worker_id = worker_id
        self.specs: dict[str, Any] = {step.id: step for step in workflow.steps}
        self.started_job_runs: dict[str, dict[str, Any]] = {}
        self._base_scope = {
            "parameters": run.parameters,
            "run": {
                "id": run.id,
                "parameters": run.parameters,
                "triggeredBy": run.triggered_by,
                "trigger": run.trigger,
                "partitionKey": run.partition_key,
            },
        }

    def base_scope(self) -> dict[str, Any]:
        return dict(self._base_scope)

    def retry_policy(self, spec: StepSpec) -> RetryPolicy | None:
        if spec.retry_policy is not None:
            return spec.retry_policy
        job = self.jobs.get(spec.job_slug) if isinstance(spec, JobStep | JobTemplate) else None
        return job.retry_policy if job else None

    def start(
        self, record: StepRecord, spec: StepSpec, scope: Mapping[str, Any], now: datetime
    ) -> Started:
        record.attempt += 1
        record.status = "running"
        record.started_at = now
        record.retry_state = None
        record.next_attempt_at = None
        record.job_run_id = None
        if isinstance(spec, ServiceStep | ServiceTemplate):
            return self._service_call(record, spec, scope)
        assert isinstance(spec, JobStep | JobTemplate)
        job = self.jobs.get(spec.job_slug)
        if job is None:
            message = f"job {spec.job_slug!r} is not registered"
            return Started(failure=_failure(message, "unknown-job"))
        step_parameters = render(spec.parameters or {}, scope)
        parameters = merge_parameters(job.default_parameters, self.run.parameters, step_parameters)
        record.input = parameters
        problems = parameter_problems(job.parameters_schema, parameters)
        if problems:
            message = f"{problems[0]['field']}: {problems[0]['message']}"
            return Started(failure=_failure(message, "invalid-parameters"))
        return self._job_run(record, spec, job, parameters, now)

    def _job_run(
        self,
        record: StepRecord,
        spec: JobStep | JobTemplate,
        job: JobDefinition,
        parameters: dict[str, Any],
        now: datetime,
    ) -> Started:
        job_run_id = new_id()
        record.job_run_id = job_run_id
        timeout_ms = spec.timeout_ms or job.timeout_ms
        policy = self.retry_policy(spec)
        context = self.event_context(record, job, job_run_id)
        row = {
            "id": job_run_id,
            "job_definition_id": job.id,
            "status": "running",
            "parameters": parameters,
            "attempt": record.attempt,
            "max_attempts": policy.max_attempts if policy else 1,
            "timeout_ms": timeout_ms,
            "context": context,
            "started_at": now,
            "created_at": now,
            "updated_at": now,
            "claimed_by": self.worker_id,
            "heartbeat_at": now,
            "workflow_run_step_id": record.row_id,
        }
        self.started_job_runs[job_run_id] = row | {"job_slug": job.slug}
        invocation = JobInvocation(
            runtime=job.runtime,
            entry_point=job.entry_point,
            parameters=parameters,
            run_id=job_run_id,
            timeout_s=timeout_ms / 1000 if timeout_ms else None,
            workflow_event_context=context,
            env=self.child_env or None,
        )
        return Started(invocation=invocation, job_run=row, job_slug=job.slug)

    def _service_call(
        self, record: StepRecord, spec: ServiceStep | ServiceTemplate, scope: Mapping[str, Any]
    ) -> Started:
        """Render the request; the step's `input` keeps it with every secret as `***`.

        Templates see `parameters` as the run's with the step's own parameters on top.
        """
        step_parameters = render(spec.parameters or {}, scope)
        scope = {**scope, "parameters": merge_parameters(self.run.parameters, step_parameters)}
        request = spec.request
        path = render(request.path, scope)
        headers = {
            name: value if isinstance(value, SecretHeader) else _as_text(render(value, scope))
            for name, value in (request.headers or {}).items()
        }
        query = render(request.query, scope) if request.query else None
        body = render(request.body, scope)
        record.input = {
            "serviceSlug": spec.service_slug,
            "request": {
                "method": request.method,
                "path": path,
                "query": query,
                "headers": masked_headers(headers),
                "body": body,
            },
        }
        if not isinstance(path, str) or not path:
            return Started(failure=_failure("request path must render to text", "invalid-request"))
        timeout_ms = spec.timeout_ms or DEFAULT_SERVICE_TIMEOUT_MS
        call = ServiceCall(
            service_slug=spec.service_slug,
            method=request.method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            timeout_s=timeout_ms / 1000,
            require_healthy=spec.require_healthy,
            allow_degraded=spec.allow_degraded,
            capture_response=spec.capture_response,
        )
        return Started(invocation=call)

    def event_context(
        self, record: StepRecord, job: JobDefinition, job_run_id: str
    ) -> dict[str, Any]:
        """`metadata.__apphubWorkflow` for events the job publishes (CONTRACT "Events")."""
        context = {
            "workflowDefinitionId": self.workflow.id,
            "workflowRunId": self.run.id,
            "workflowRunStepId": record.row_id,
            "jobRunId": job_run_id,
            "jobSlug": job.slug,
        }
        if self.run.run_key:
            context["workflowRunKey"] = self.run.run_key
        return context

    def fanout_items(
        self, spec: FanoutStep, scope: Mapping[str, Any]
    ) -> tuple[list[Any], str | None]:
        """The collection to fan out over, or why it cannot be used."""
        items = render(spec.collection, scope)
        if not isinstance(items, list):
            kind = "null" if items is None else type(items).__name__
            return [], f"fan-out collection must be a list, got {kind}"
        if len(items) > spec.max_items:
            return [], (
                f"fan-out collection of {len(items)} items exceeds the limit of "
                f"{spec.max_items} (maxItems)"
            )
        return items, None

    def run_view(
        self,
        run_values: Mapping[str, Any],
        metrics: Mapping[str, int],
        shared: Mapping[str, Any],
        steps: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The run as the contract shows it, built from memory (frames need no query)."""
        run = self.run
        values = {
            "id": run.id,
            "workflowDefinitionId": run.workflow_definition_id,
            "workflowSlug": self.workflow.slug,
            "status": run_values["status"],
            "parameters": run.parameters,
            "context": {"shared": dict(shared), "steps": dict(steps)},
            "output": run_values.get("output"),
            "errorMessage": run_values.get("error_message"),
            "currentStepId": run_values.get("current_step_id"),
            "metrics": dict(metrics),
            "triggeredBy": run.triggered_by,
            "trigger": run.trigger,
            "partitionKey": run.partition_key,
            "runKey": run.run_key,
            "createdAt": iso_ms(run.created_at),
            "startedAt": _iso(run_values.get("started_at")),
            "completedAt": _iso(run_values.get("completed_at")),
            "durationMs": run_values.get("duration_ms"),
        }
        return WorkflowRun.model_validate(values).model_dump(mode="json")


def _iso(value: datetime | None) -> str | None:
    return iso_ms(value) if value is not None else None


def _as_text(value: Any) -> str:
    """A header value as sent: text as-is, null as empty, anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _failure(message: str, reason: str) -> JobOutcome:
    return JobOutcome(status="failed", error_message=message, failure_reason=reason)
