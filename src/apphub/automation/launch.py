"""Creating a workflow run inside the caller's transaction: the one path the API, event
triggers and schedules share (parameters checked, partition key checked, run key honoured)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.domain.requests import WorkflowRunRequest, pending_run, workflow_run_values
from apphub.domain.runs import WorkflowRun
from apphub.domain.workflows import WorkflowDefinition
from apphub.store import workflow_runs as run_store


async def insert_run(
    connection: AsyncConnection,
    workflow: WorkflowDefinition,
    request: WorkflowRunRequest,
    run_id: str | None = None,
) -> WorkflowRun:
    """Insert a pending run; the caller enqueues it after the commit.

    Raises DefinitionError (parameters or partition key refused) and
    `run_store.RunKeyTakenError` (an active run holds the run key).
    """
    values = workflow_run_values(workflow, request, run_id)
    await run_store.insert_workflow_run(connection, values)
    return pending_run(values, workflow.slug)
