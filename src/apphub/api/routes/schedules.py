"""Cron schedules: `/workflows/{slug}/schedules`, `/workflow-schedules`.

A save writes the schedule and its timer in one transaction, then tells the scheduler
processes (which sleep until the next due occurrence) that something changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.api.auth import require
from apphub.api.routes.workflows import workflow_or_404
from apphub.api.schemas import BAD_INPUT, GUARDED, NOT_FOUND, Data
from apphub.api.state import Db, Services
from apphub.automation.scheduler import announce_change, plan_next
from apphub.domain.base import utc_now
from apphub.domain.errors import DefinitionError, NotFoundError
from apphub.domain.parameters import check_parameters, merge_parameters
from apphub.domain.schedules import (
    Schedule,
    SchedulePatch,
    ScheduleSpec,
    Timing,
    first_watermark,
    next_occurrence,
    schedulable,
)
from apphub.domain.workflows import WorkflowDefinition
from apphub.security import Principal
from apphub.store import schedules as schedule_store
from apphub.store import workflows as workflow_store
from apphub.store.rows import camel_row, column_values, new_id

router = APIRouter(tags=["schedules"])

TIMING_FIELDS = ("cron", "timezone", "start_window", "end_window")


def _view(row: Any) -> Schedule:
    return Schedule.model_validate(camel_row(row._mapping))


def _check(workflow: WorkflowDefinition, spec: ScheduleSpec) -> None:
    """What can be known at save time: the workflow can be scheduled, the parameters fit."""
    problem = schedulable(workflow.steps)
    if problem is not None:
        raise DefinitionError(problem, reason="not_schedulable", detail={"field": "workflow"})
    check_parameters(
        workflow.parameters_schema, merge_parameters(workflow.default_parameters, spec.parameters)
    )


def _timing(spec: ScheduleSpec) -> Timing:
    return Timing(spec.cron, spec.timezone, spec.start_window, spec.end_window, spec.catch_up)


def _columns(spec: ScheduleSpec, watermark: datetime) -> dict[str, Any]:
    """The stored columns, with the watermark and the next due occurrence it gives."""
    due = next_occurrence(_timing(spec), watermark) if spec.is_active else None
    times = {"start_window": spec.start_window, "end_window": spec.end_window}
    return column_values(spec) | times | {"last_occurrence": watermark, "next_run_at": due}


async def _schedule_or_404(connection: AsyncConnection, schedule_id: str) -> Any:
    row = await schedule_store.get_schedule(connection, schedule_id, lock=True)
    if row is None:
        raise NotFoundError("schedule not found")
    return row


@router.post(
    "/workflows/{slug}/schedules",
    status_code=201,
    response_model=Data[Schedule],
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def create_schedule(
    slug: str,
    spec: ScheduleSpec,
    services: Services,
    _: Annotated[Principal, require("workflows:write", "schedule.create")],
) -> dict[str, Any]:
    """Occurrences after a past `startWindow` count as missed (run with catch-up)."""
    now = utc_now()
    schedule_id = new_id()
    async with services.database.write() as connection:
        workflow = await workflow_or_404(connection, slug)
        _check(workflow, spec)
        values = _columns(spec, first_watermark(_timing(spec), now))
        values |= {
            "id": schedule_id,
            "workflow_definition_id": workflow.id,
            "created_at": now,
            "updated_at": now,
        }
        await schedule_store.insert_schedule(connection, values)
        await plan_next(connection, schedule_id, values["next_run_at"], now)
        row = await _schedule_or_404(connection, schedule_id)
    await announce_change(services.broadcaster, row.next_run_at)
    return {"data": _view(row)}


@router.get("/workflows/{slug}/schedules", response_model=Data[list[Schedule]], responses=NOT_FOUND)
async def list_workflow_schedules(slug: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        workflow = await workflow_or_404(connection, slug)
        rows = await schedule_store.list_schedules(connection, workflow.id)
    return {"data": [_view(row) for row in rows]}


@router.get("/workflow-schedules", response_model=Data[list[Schedule]])
async def list_schedules(database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        rows = await schedule_store.list_schedules(connection)
    return {"data": [_view(row) for row in rows]}


@router.get("/workflow-schedules/{schedule_id}", response_model=Data[Schedule], responses=NOT_FOUND)
async def get_schedule(schedule_id: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        row = await schedule_store.get_schedule(connection, schedule_id)
    if row is None:
        raise NotFoundError("schedule not found")
    return {"data": _view(row)}


@router.patch(
    "/workflow-schedules/{schedule_id}",
    response_model=Data[Schedule],
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def update_schedule(
    schedule_id: str,
    patch: SchedulePatch,
    services: Services,
    _: Annotated[Principal, require("workflows:write", "schedule.update")],
) -> dict[str, Any]:
    """Merged over the stored schedule. A change of timing, or turning it back on, owes
    occurrences from now on (none missed meanwhile are caught up)."""
    changes = patch.model_dump(exclude_unset=True)
    now = utc_now()
    async with services.database.write() as connection:
        row = await _schedule_or_404(connection, schedule_id)
        stored = _view(row).model_dump(include=set(ScheduleSpec.model_fields))
        spec = ScheduleSpec.model_validate(stored | changes, by_name=True)
        workflow = await workflow_store.get_workflow_by_id(connection, row.workflow_definition_id)
        assert workflow is not None  # the schedule goes with its workflow
        _check(workflow, spec)
        restart = any(changes.get(f, row._mapping[f]) != row._mapping[f] for f in TIMING_FIELDS)
        restart = restart or (spec.is_active and not row.is_active)
        watermark = max(now, first_watermark(_timing(spec), now)) if restart else None
        values = _columns(spec, watermark or row.last_occurrence or now)
        await schedule_store.update_schedule(connection, schedule_id, values | {"updated_at": now})
        await plan_next(connection, schedule_id, values["next_run_at"], now)
        row = await _schedule_or_404(connection, schedule_id)
    await announce_change(services.broadcaster, row.next_run_at)
    return {"data": _view(row)}


@router.delete(
    "/workflow-schedules/{schedule_id}",
    status_code=204,
    response_class=Response,
    responses=GUARDED | NOT_FOUND,
)
async def delete_schedule(
    schedule_id: str,
    services: Services,
    _: Annotated[Principal, require("workflows:write", "schedule.delete")],
) -> Response:
    now = utc_now()
    async with services.database.write() as connection:
        if not await schedule_store.delete_schedule(connection, schedule_id):
            raise NotFoundError("schedule not found")
        await plan_next(connection, schedule_id, None, now)
    return Response(status_code=204)
