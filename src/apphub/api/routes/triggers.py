"""`/workflows/{slug}/triggers`: event triggers of a workflow, and their deliveries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.api.auth import require
from apphub.api.routes.workflows import workflow_or_404
from apphub.api.schemas import BAD_INPUT, GUARDED, NOT_FOUND, Data
from apphub.api.state import Db
from apphub.domain.base import utc_now
from apphub.domain.errors import NotFoundError
from apphub.domain.triggers import (
    Delivery,
    DeliveryStatus,
    Trigger,
    TriggerPatch,
    TriggerSpec,
    check_templates,
    sample_scope,
)
from apphub.security import Principal
from apphub.store import triggers as trigger_store
from apphub.store.rows import camel_row, column_values, new_id

router = APIRouter(tags=["triggers"])

_NOT_STORED = {"sample_event"}
_SPEC_KEYS = [f.alias for n, f in TriggerSpec.model_fields.items() if n not in _NOT_STORED]


def _view(row: Any) -> Trigger:
    return Trigger.model_validate(camel_row(row._mapping))


def _checked(spec: TriggerSpec) -> dict[str, Any]:
    """Templates checked (against the sample event when given); the columns to store."""
    sample = sample_scope(spec.sample_event, spec) if spec.sample_event is not None else None
    check_templates(spec, sample, utc_now())
    values = column_values(spec, exclude=_NOT_STORED)
    values["name"] = spec.name or spec.event_type
    return values


async def _trigger_or_404(
    connection: AsyncConnection, workflow_id: str, trigger_id: str, *, lock: bool = False
) -> Any:
    row = await trigger_store.get_trigger(connection, workflow_id, trigger_id, lock=lock)
    if row is None:
        raise NotFoundError("trigger not found")
    return row


@router.post(
    "/workflows/{slug}/triggers",
    status_code=201,
    response_model=Data[Trigger],
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def create_trigger(
    slug: str,
    spec: TriggerSpec,
    database: Db,
    _: Annotated[Principal, require("workflows:write", "trigger.create")],
) -> dict[str, Any]:
    """Templates are checked first: a bad one is a 400 and nothing is stored."""
    values = _checked(spec)
    now = utc_now()
    trigger_id = new_id()
    async with database.write() as connection:
        workflow = await workflow_or_404(connection, slug)
        values |= {
            "id": trigger_id,
            "workflow_definition_id": workflow.id,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        await trigger_store.insert_trigger(connection, values)
        row = await _trigger_or_404(connection, workflow.id, trigger_id)
    return {"data": _view(row)}


@router.get("/workflows/{slug}/triggers", response_model=Data[list[Trigger]], responses=NOT_FOUND)
async def list_triggers(slug: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        workflow = await workflow_or_404(connection, slug)
        rows = await trigger_store.list_triggers(connection, workflow.id)
    return {"data": [_view(row) for row in rows]}


@router.get(
    "/workflows/{slug}/triggers/{trigger_id}", response_model=Data[Trigger], responses=NOT_FOUND
)
async def get_trigger(slug: str, trigger_id: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        workflow = await workflow_or_404(connection, slug)
        row = await _trigger_or_404(connection, workflow.id, trigger_id)
    return {"data": _view(row)}


@router.patch(
    "/workflows/{slug}/triggers/{trigger_id}",
    response_model=Data[Trigger],
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def update_trigger(
    slug: str,
    trigger_id: str,
    patch: TriggerPatch,
    database: Db,
    _: Annotated[Principal, require("workflows:write", "trigger.update")],
) -> dict[str, Any]:
    """The changes are merged over the stored trigger, which must then pass every rule a new
    one passes; `version` grows by one. Re-enabling a trigger also ends a pause."""
    changes = patch.model_dump(mode="json", by_alias=True, exclude_unset=True)
    async with database.write() as connection:
        workflow = await workflow_or_404(connection, slug)
        row = await _trigger_or_404(connection, workflow.id, trigger_id, lock=True)
        current = _view(row).model_dump(mode="json", by_alias=True)
        stored = {key: current[key] for key in _SPEC_KEYS if key in current}
        spec = TriggerSpec.model_validate(stored | changes)
        values = _checked(spec) | {"version": row.version + 1, "updated_at": utc_now()}
        if changes.get("status") == "active":
            values |= {"paused_until": None, "recent_failures": []}
        await trigger_store.update_trigger(connection, trigger_id, values)
        row = await _trigger_or_404(connection, workflow.id, trigger_id)
    return {"data": _view(row)}


@router.delete(
    "/workflows/{slug}/triggers/{trigger_id}",
    status_code=204,
    response_class=Response,
    responses=GUARDED | NOT_FOUND,
)
async def delete_trigger(
    slug: str,
    trigger_id: str,
    database: Db,
    _: Annotated[Principal, require("workflows:write", "trigger.delete")],
) -> Response:
    """Its deliveries go with it; runs it launched stay."""
    async with database.write() as connection:
        workflow = await workflow_or_404(connection, slug)
        if not await trigger_store.delete_trigger(connection, workflow.id, trigger_id):
            raise NotFoundError("trigger not found")
    return Response(status_code=204)


@router.get(
    "/workflows/{slug}/triggers/{trigger_id}/deliveries",
    response_model=Data[list[Delivery]],
    responses=BAD_INPUT | NOT_FOUND,
)
async def list_deliveries(
    slug: str,
    trigger_id: str,
    database: Db,
    status: DeliveryStatus | None = None,
    event_id: Annotated[str | None, Query(alias="eventId", max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Newest first."""
    async with database.read() as connection:
        workflow = await workflow_or_404(connection, slug)
        await _trigger_or_404(connection, workflow.id, trigger_id)
        rows = await trigger_store.list_deliveries(
            connection, trigger_id, status=status, event_id=event_id, limit=limit
        )
    return {"data": [Delivery.model_validate(camel_row(row._mapping)) for row in rows]}
