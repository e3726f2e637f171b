"""`/workflow-runs`: runs across workflows, one run, its steps, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from apphub.api.auth import require
from apphub.api.schemas import BAD_INPUT, CONFLICT, GUARDED, NOT_FOUND, Data
from apphub.api.state import Db, Services
from apphub.domain.errors import NotFoundError
from apphub.domain.runs import WorkflowRun, WorkflowRunStatus, WorkflowRunStep
from apphub.engine.runs import cancel_workflow_run
from apphub.security import Principal
from apphub.store import workflow_runs as run_store
from apphub.store import workflows as workflow_store

router = APIRouter(tags=["runs"])


@router.get("/workflow-runs", response_model=Data[list[WorkflowRun]], responses=BAD_INPUT)
async def list_runs(
    database: Db,
    status: WorkflowRunStatus | None = None,
    workflow: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    async with database.read() as connection:
        workflow_id = None
        if workflow is not None:
            definition = await workflow_store.get_workflow(connection, workflow)
            if definition is None:
                return {"data": []}
            workflow_id = definition.id
        runs = await run_store.list_workflow_runs(
            connection,
            workflow_definition_id=workflow_id,
            status=status,
            limit=limit,
            offset=offset,
        )
    return {"data": runs}


@router.get("/workflow-runs/{run_id}", response_model=Data[WorkflowRun], responses=NOT_FOUND)
async def get_run(run_id: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        run = await run_store.get_workflow_run(connection, run_id)
    if run is None:
        raise NotFoundError("workflow run not found")
    return {"data": run}


@router.get(
    "/workflow-runs/{run_id}/steps",
    response_model=Data[list[WorkflowRunStep]],
    responses=NOT_FOUND,
)
async def get_run_steps(run_id: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        if await run_store.run_row(connection, run_id) is None:
            raise NotFoundError("workflow run not found")
        steps = await run_store.list_steps(connection, run_id)
    return {"data": steps}


@router.post(
    "/workflow-runs/{run_id}/cancel",
    status_code=202,
    response_model=Data[WorkflowRun],
    responses=GUARDED | NOT_FOUND | CONFLICT,
)
async def cancel_run(
    run_id: str,
    services: Services,
    _: Annotated[Principal, require("workflows:run", "workflow-run.cancel")],
) -> dict[str, Any]:
    """Cancel: pending steps are canceled and running ones stopped (child processes killed)."""
    return {"data": await cancel_workflow_run(services, run_id)}
