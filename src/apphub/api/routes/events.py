"""Events: publish over HTTP, and read the event log (`/admin/events`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from apphub.api.auth import require
from apphub.api.event_queries import as_utc, cursor_position, json_path_condition
from apphub.api.schemas import BAD_INPUT, GUARDED, Data, Page
from apphub.api.state import Db, Services
from apphub.automation.ingress import INTERNAL_SOURCE_PREFIX, event_view
from apphub.domain.base import ApiModel, UtcTime, utc_now
from apphub.domain.errors import DefinitionError
from apphub.domain.events import EventEnvelope, EventView, Severity
from apphub.domain.paging import encode_cursor
from apphub.security import Principal
from apphub.store import events as event_store

router = APIRouter(tags=["events"])


class Accepted(ApiModel):
    accepted_at: UtcTime
    event: EventEnvelope


class EventPage(ApiModel):
    events: list[EventView]
    page: Page


async def _publish(envelope: EventEnvelope, services: Services) -> dict[str, Any]:
    """Stored once by id (a replayed id is accepted and changes nothing), then processed.

    Sources starting with `apphub.` are apphub's own: the materializer acts on them (an
    `asset.produced` from `apphub.orchestrator` launches runs), so nobody may publish them.
    """
    if envelope.source.startswith(INTERNAL_SOURCE_PREFIX):
        raise DefinitionError(
            f"source: the {INTERNAL_SOURCE_PREFIX!r} prefix is reserved for apphub's own events",
            reason="reserved_source",
            detail={"field": "source"},
        )
    await services.ingress.ingest([envelope], acknowledge_now=True)
    return {"data": {"acceptedAt": utc_now(), "event": envelope}}


@router.post(
    "/events", status_code=202, response_model=Data[Accepted], responses=BAD_INPUT | GUARDED
)
async def publish_event(
    envelope: EventEnvelope,
    services: Services,
    _: Annotated[Principal, require("events:publish", "event.publish")],
) -> dict[str, Any]:
    return await _publish(envelope, services)


@router.post(
    "/internal/events/publish",
    status_code=202,
    response_model=Data[Accepted],
    responses=BAD_INPUT | GUARDED,
    include_in_schema=True,
)
async def publish_event_internal(
    envelope: EventEnvelope,
    services: Services,
    _: Annotated[Principal, require("events:publish", "event.publish")],
) -> dict[str, Any]:
    """The same as `POST /events` (the original system's path)."""
    return await _publish(envelope, services)


@router.get("/admin/events", response_model=Data[EventPage], responses=BAD_INPUT | GUARDED)
async def list_events(
    database: Db,
    _: Annotated[Principal, require("admin:read", "events.read")],
    type: Annotated[str | None, Query(max_length=256)] = None,
    source: Annotated[str | None, Query(max_length=256)] = None,
    correlation_id: Annotated[str | None, Query(alias="correlationId", max_length=256)] = None,
    occurred_from: Annotated[datetime | None, Query(alias="from")] = None,
    occurred_to: Annotated[datetime | None, Query(alias="to")] = None,
    json_path: Annotated[str | None, Query(alias="jsonPath", max_length=512)] = None,
    severity: Severity | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """Newest first by `occurredAt` then `id`; `page.nextCursor` continues the list."""
    before = cursor_position(cursor) if cursor else None
    async with database.read() as connection:
        condition = await json_path_condition(connection, json_path) if json_path else None
        where = event_store.EventFilter(
            type=type,
            source=source,
            correlation_id=correlation_id,
            severity=severity,
            occurred_from=as_utc(occurred_from),
            occurred_to=as_utc(occurred_to),
            json_path=condition,
        )
        rows = await event_store.query_events(connection, where, limit + 1, before)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more:
        last = rows[-1]
        next_cursor = encode_cursor({"at": last.occurred_at.isoformat(), "id": last.id})
    return {
        "data": {
            "events": [event_view(row) for row in rows],
            "page": {"nextCursor": next_cursor, "hasMore": has_more, "limit": limit},
        }
    }
