"""Start and cancel runs: validate, record, commit, then wake a worker (the API only records)."""

from __future__ import annotations

from typing import Any

from apphub.automation.ingress import store_events
from apphub.automation.launch import insert_run
from apphub.bus.frames import CONTROL_CHANNEL, frame
from apphub.domain.base import utc_now
from apphub.domain.errors import ConflictError, NotFoundError
from apphub.domain.jobs import JobDefinition
from apphub.domain.parameters import check_parameters, merge_parameters
from apphub.domain.requests import JobRunRequest, WorkflowRunRequest
from apphub.domain.runs import JobRun, WorkflowRun
from apphub.engine.run_events import announces_end, run_ended_event
from apphub.engine.services import EngineServices
from apphub.store import job_runs as job_run_store
from apphub.store import jobs as job_store
from apphub.store import workflow_runs as run_store
from apphub.store import workflows as workflow_store
from apphub.store.rows import camel_row, new_id

RUN_KEY_TAKEN = "run key already pending or running"


async def start_workflow_run(
    services: EngineServices, slug: str, request: WorkflowRunRequest
) -> WorkflowRun:
    async with services.database.write() as connection:
        workflow = await workflow_store.get_workflow(connection, slug)
        if workflow is None:
            raise NotFoundError("workflow not found")
        try:
            run = await insert_run(connection, workflow, request)
        except run_store.RunKeyTakenError:
            key = (request.run_key or "").lower()
            holder = await run_store.active_run_with_key(connection, workflow.id, key)
            raise ConflictError(RUN_KEY_TAKEN, reason="run_key_conflict", data=holder) from None
    await services.workflow_queue.enqueue(run.id)
    services.frames.publish([frame("workflow.run.pending", run.model_dump(mode="json"))])
    return run


async def start_job_run(services: EngineServices, slug: str, request: JobRunRequest) -> JobRun:
    async with services.database.write() as connection:
        job = await job_store.get_job(connection, slug)
        if job is None:
            raise NotFoundError("job not found")
        values = job_run_values(job, request.parameters)
        await job_run_store.insert_job_runs(connection, [values])
    run = JobRun.model_validate(camel_row(values) | {"jobSlug": job.slug})
    await services.job_queue.enqueue(run.id)
    services.frames.publish([frame("job.run.pending", run.model_dump(mode="json"))])
    return run


def job_run_values(job: JobDefinition, requested: dict[str, Any]) -> dict[str, Any]:
    parameters = merge_parameters(job.default_parameters, requested)
    check_parameters(job.parameters_schema, parameters)
    now = utc_now()
    return {
        "id": new_id(),
        "job_definition_id": job.id,
        "status": "pending",
        "parameters": parameters,
        "attempt": 1,
        "max_attempts": job.retry_policy.max_attempts if job.retry_policy else 1,
        "timeout_ms": job.timeout_ms,
        "created_at": now,
        "updated_at": now,
    }


async def cancel_workflow_run(services: EngineServices, run_id: str) -> WorkflowRun:
    """Cancel a run: at once if no worker holds it, else its worker stops it (202 either way)."""
    now = utc_now()
    events: list[Any] = []
    async with services.database.write() as connection:
        outcome = await run_store.request_cancel(connection, run_id, now)
        run = await run_store.get_workflow_run(connection, run_id)
        if outcome == "canceled" and run is not None and announces_end(run):
            ended = run_ended_event(run, "canceled", run.workflow_slug, run.started_at, now)
            events = await store_events(connection, [ended], now)
    services.ingress.process_soon(events)
    if run is None:
        raise NotFoundError("workflow run not found")
    if outcome is None:
        raise ConflictError(f"workflow run already {run.status}", reason="run_finished", data=run)
    if outcome == "canceled":
        services.frames.publish([frame("workflow.run.canceled", run.model_dump(mode="json"))])
    else:
        await services.broadcaster.publish(CONTROL_CHANNEL, {"type": "cancel-run", "runId": run_id})
    return run
