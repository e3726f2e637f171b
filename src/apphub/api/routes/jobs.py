"""`/jobs`: register, read and change job definitions; their runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from apphub.api.auth import require
from apphub.api.schemas import BAD_INPUT, CONFLICT, GUARDED, NOT_FOUND, Data
from apphub.api.state import Db, Services
from apphub.domain.errors import NotFoundError
from apphub.domain.jobs import JobDefinition, JobPatch, JobSpec
from apphub.domain.requests import JobRunRequest
from apphub.domain.runs import JobRun, JobRunStatus
from apphub.engine import registry
from apphub.engine.runs import start_job_run
from apphub.security import Principal
from apphub.store import job_runs as job_run_store
from apphub.store import jobs as job_store

router = APIRouter(tags=["jobs"])

RECENT_RUNS = 20


class JobDetail(BaseModel):
    job: JobDefinition
    runs: list[JobRun]


@router.post(
    "/jobs",
    status_code=201,
    response_model=Data[JobDefinition],
    responses=BAD_INPUT | GUARDED | CONFLICT,
)
async def create_job(
    spec: JobSpec, database: Db, _: Annotated[Principal, require("jobs:write", "job.create")]
) -> dict[str, Any]:
    return {"data": await registry.create_job(database, spec)}


@router.get("/jobs", response_model=Data[list[JobDefinition]])
async def list_jobs(database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        return {"data": await job_store.list_jobs(connection)}


@router.get("/jobs/{slug}", response_model=Data[JobDetail], responses=NOT_FOUND)
async def get_job(slug: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        job = await _job_or_404(connection, slug)
        runs = await job_run_store.list_job_runs(
            connection, job_definition_id=job.id, limit=RECENT_RUNS
        )
    return {"data": {"job": job, "runs": runs}}


@router.patch(
    "/jobs/{slug}",
    response_model=Data[JobDefinition],
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def update_job(
    slug: str,
    patch: JobPatch,
    database: Db,
    _: Annotated[Principal, require("jobs:write", "job.update")],
) -> dict[str, Any]:
    changes = patch.model_dump(mode="json", exclude_unset=True)
    return {"data": await registry.update_job(database, slug, changes)}


@router.get("/jobs/{slug}/runs", response_model=Data[list[JobRun]], responses=BAD_INPUT | NOT_FOUND)
async def list_job_runs(
    slug: str,
    database: Db,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    async with database.read() as connection:
        job = await _job_or_404(connection, slug)
        runs = await job_run_store.list_job_runs(
            connection, job_definition_id=job.id, limit=limit, offset=offset
        )
    return {"data": runs}


@router.post(
    "/jobs/{slug}/run",
    status_code=202,
    response_model=Data[JobRun],
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def run_job(
    slug: str,
    services: Services,
    _: Annotated[Principal, require("jobs:run", "job.run")],
    request: JobRunRequest | None = None,
) -> dict[str, Any]:
    """Record a pending job run and wake a worker; parameters are checked first (400)."""
    return {"data": await start_job_run(services, slug, request or JobRunRequest())}


@router.get("/job-runs", response_model=Data[list[JobRun]], responses=BAD_INPUT)
async def list_all_job_runs(
    database: Db,
    status: JobRunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    async with database.read() as connection:
        runs = await job_run_store.list_job_runs(
            connection, status=status, limit=limit, offset=offset
        )
    return {"data": runs}


@router.get("/job-runs/{job_run_id}", response_model=Data[JobRun], responses=NOT_FOUND)
async def get_job_run(job_run_id: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        run = await job_run_store.get_job_run(connection, job_run_id)
    if run is None:
        raise NotFoundError("job run not found")
    return {"data": run}


async def _job_or_404(connection: Any, slug: str) -> JobDefinition:
    job = await job_store.get_job(connection, slug)
    if job is None:
        raise NotFoundError("job not found")
    return job
