"""`/workflows`: register, read and change workflow definitions; their runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.api.auth import require
from apphub.api.schemas import BAD_INPUT, CONFLICT, GUARDED, NOT_FOUND, Data
from apphub.api.state import Db, Services
from apphub.bus.frames import frame
from apphub.domain.errors import NotFoundError
from apphub.domain.requests import WorkflowRunRequest
from apphub.domain.runs import WorkflowRun
from apphub.domain.workflows import WorkflowDefinition, WorkflowPatch, WorkflowSpec
from apphub.engine import registry
from apphub.engine.runs import start_workflow_run
from apphub.security import Principal
from apphub.store import workflow_runs as run_store
from apphub.store import workflows as workflow_store

router = APIRouter(tags=["workflows"])

RECENT_RUNS = 20


class WorkflowDetail(BaseModel):
    workflow: WorkflowDefinition
    runs: list[WorkflowRun]


@router.post(
    "/workflows",
    status_code=201,
    response_model=Data[WorkflowDefinition],
    responses=BAD_INPUT | GUARDED | CONFLICT,
)
async def create_workflow(
    spec: WorkflowSpec,
    services: Services,
    _: Annotated[Principal, require("workflows:write", "workflow.create")],
) -> dict[str, Any]:
    workflow = await registry.create_workflow(
        services.database, spec, events=services.ingress.process_soon
    )
    return {"data": workflow}


@router.get("/workflows", response_model=Data[list[WorkflowDefinition]])
async def list_workflows(database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        return {"data": await workflow_store.list_workflows(connection)}


@router.get("/workflows/{slug}", response_model=Data[WorkflowDetail], responses=NOT_FOUND)
async def get_workflow(slug: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        workflow = await workflow_or_404(connection, slug)
        runs = await run_store.list_workflow_runs(
            connection, workflow_definition_id=workflow.id, limit=RECENT_RUNS
        )
    return {"data": {"workflow": workflow, "runs": runs}}


@router.patch(
    "/workflows/{slug}",
    response_model=Data[WorkflowDefinition],
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def update_workflow(
    slug: str,
    patch: WorkflowPatch,
    database: Db,
    services: Services,
    _: Annotated[Principal, require("workflows:write", "workflow.update")],
) -> dict[str, Any]:
    changes = patch.model_dump(mode="json", exclude_unset=True)
    workflow = await registry.update_workflow(
        database, slug, changes, events=services.ingress.process_soon
    )
    services.frames.publish(
        [frame("workflow.definition.updated", workflow.model_dump(mode="json"))]
    )
    return {"data": workflow}


@router.get(
    "/workflows/{slug}/runs",
    response_model=Data[list[WorkflowRun]],
    responses=BAD_INPUT | NOT_FOUND,
)
async def list_workflow_runs(
    slug: str,
    database: Db,
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    async with database.read() as connection:
        workflow = await workflow_or_404(connection, slug)
        runs = await run_store.list_workflow_runs(
            connection, workflow_definition_id=workflow.id, limit=limit, offset=offset
        )
    return {"data": runs}


@router.post(
    "/workflows/{slug}/run",
    status_code=202,
    response_model=Data[WorkflowRun],
    responses=BAD_INPUT | GUARDED | NOT_FOUND | CONFLICT,
)
async def run_workflow(
    slug: str,
    services: Services,
    _: Annotated[Principal, require("workflows:run", "workflow.run")],
    request: WorkflowRunRequest | None = None,
) -> dict[str, Any]:
    """Record a pending run and wake a worker. 409 when the run key is held by an active run."""
    return {"data": await start_workflow_run(services, slug, request or WorkflowRunRequest())}


async def workflow_or_404(connection: AsyncConnection, slug: str) -> WorkflowDefinition:
    workflow = await workflow_store.get_workflow(connection, slug)
    if workflow is None:
        raise NotFoundError("workflow not found")
    return workflow
