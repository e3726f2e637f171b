"""`/events/saved-views`: named `/admin/events` filter sets, owned by their creator, shareable.

Writes and `apply` need `admin:read` (the event log is admin:read data). GETs are open like
every other GET, but a private view is its owner's only, so they read the bearer token
themselves to know who is asking.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import Field, StringConstraints, field_validator
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.api.auth import caller_subject, require
from apphub.api.errors import ApiError
from apphub.api.event_queries import cursor_position, json_path_condition
from apphub.api.schemas import BAD_INPUT, CONFLICT, GUARDED, NOT_FOUND, Data, Page
from apphub.api.state import Db
from apphub.automation.ingress import event_view
from apphub.domain.base import ApiModel, Name, UtcTime, utc_now
from apphub.domain.errors import ConflictError
from apphub.domain.events import EventView, Severity
from apphub.domain.paging import encode_cursor
from apphub.security import Principal
from apphub.store import events as event_store
from apphub.store import saved_views as view_store
from apphub.store.database import Database

router = APIRouter(prefix="/events/saved-views", tags=["events"])

VIEW_NOT_FOUND = "saved view not found"
SLUG_ATTEMPTS = 3
"""A derived slug can be taken between lookup and insert by a concurrent create; retry."""

FilterText = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ViewSlug = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=view_store.MAX_SLUG)
]
Description = Annotated[str, StringConstraints(max_length=2000)]


class ViewFilters(ApiModel):
    """The filters of `GET /admin/events`, with the same names and rules."""

    type: FilterText | None = None
    source: FilterText | None = None
    correlation_id: FilterText | None = None
    severity: Severity | None = None
    occurred_from: UtcTime | None = Field(default=None, alias="from")
    occurred_to: UtcTime | None = Field(default=None, alias="to")
    json_path: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None

    @field_validator("occurred_from", "occurred_to")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        """A time without an offset is UTC, as on `/admin/events`."""
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


class NewView(ApiModel):
    slug: ViewSlug | None = None
    name: Name
    description: Description | None = None
    filters: ViewFilters
    shared: bool = False


class ViewPatch(ApiModel):
    """Any of name, description, filters; `filters` replaces the whole set."""

    name: Name | None = None
    description: Description | None = None
    filters: ViewFilters | None = None

    @field_validator("name", "filters")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out but not null")
        return value


class ViewAnalytics(ApiModel):
    """Recent activity in the view's scope (its own from/to ignored), from a bounded sample."""

    window_minutes: int
    events_per_minute: float
    error_ratio: float
    sampled_count: int
    sample_limit: int
    sample_limit_hit: bool


class SavedView(ApiModel):
    slug: str
    name: str
    description: str | None
    owner_subject: str
    filters: ViewFilters
    shared: bool
    apply_count: int
    last_applied_at: UtcTime | None
    created_at: UtcTime
    updated_at: UtcTime
    analytics: ViewAnalytics


class AppliedView(ApiModel):
    view: SavedView
    events: list[EventView]
    page: Page


Caller = Annotated[str | None, Depends(caller_subject)]


@router.get("", response_model=Data[list[SavedView]], responses=GUARDED)
async def list_views(database: Db, caller: Caller) -> dict[str, Any]:
    """Shared views, and the caller's own private ones; ordered by slug."""
    async with database.read() as connection:
        rows = await view_store.visible_views(connection, caller)
        return {"data": [await _present(connection, row) for row in rows]}


@router.post(
    "",
    status_code=201,
    response_model=Data[SavedView],
    responses=BAD_INPUT | GUARDED | CONFLICT,
)
async def create_view(
    body: NewView,
    database: Db,
    principal: Annotated[Principal, require("admin:read", "saved-view.create")],
) -> dict[str, Any]:
    row = await _insert(database, body, principal.subject)
    async with database.read() as connection:
        return {"data": await _present(connection, row)}


@router.get("/{slug}", response_model=Data[SavedView], responses=GUARDED | NOT_FOUND)
async def get_view(slug: str, database: Db, caller: Caller) -> dict[str, Any]:
    async with database.read() as connection:
        row = await _view_or_404(connection, slug)
        _check_readable(row, caller)
        return {"data": await _present(connection, row)}


@router.patch("/{slug}", response_model=Data[SavedView], responses=BAD_INPUT | GUARDED | NOT_FOUND)
async def update_view(
    slug: str,
    patch: ViewPatch,
    database: Db,
    principal: Annotated[Principal, require("admin:read", "saved-view.update")],
) -> dict[str, Any]:
    """Owner only; an empty body changes nothing (not even `updatedAt`)."""
    changes = {field: getattr(patch, field) for field in patch.model_fields_set}
    if patch.filters is not None:
        changes["filters"] = _stored_filters(patch.filters)
    async with database.write() as connection:
        row = await _owned_view(connection, slug, principal.subject)
        if patch.filters is not None:
            await _check_json_path(connection, patch.filters)
        if changes:
            row = await _changed(connection, slug, changes)
    async with database.read() as connection:
        return {"data": await _present(connection, row)}


@router.delete("/{slug}", status_code=204, responses=GUARDED | NOT_FOUND)
async def delete_view(
    slug: str,
    database: Db,
    principal: Annotated[Principal, require("admin:read", "saved-view.delete")],
) -> Response:
    async with database.write() as connection:
        await _owned_view(connection, slug, principal.subject)
        await view_store.delete_view(connection, slug)
    return Response(status_code=204)


@router.post("/{slug}/share", response_model=Data[SavedView], responses=GUARDED | NOT_FOUND)
async def share_view(
    slug: str,
    database: Db,
    principal: Annotated[Principal, require("admin:read", "saved-view.share")],
) -> dict[str, Any]:
    """Owner only; sharing is one-way, and sharing a shared view changes nothing."""
    async with database.write() as connection:
        row = await _owned_view(connection, slug, principal.subject)
        if not row.shared:
            row = await _changed(connection, slug, {"shared": True})
    async with database.read() as connection:
        return {"data": await _present(connection, row)}


@router.post(
    "/{slug}/apply",
    response_model=Data[AppliedView],
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def apply_view(
    slug: str,
    database: Db,
    principal: Annotated[Principal, require("admin:read", "saved-view.apply")],
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """Run the view's filters as `GET /admin/events` would; every call counts as one use."""
    before = cursor_position(cursor) if cursor else None
    async with database.read() as connection:
        row = await _view_or_404(connection, slug)
        _check_readable(row, principal.subject)
        where = await _event_filter(connection, _filters(row))
        rows = await event_store.query_events(connection, where, limit + 1, before)
        analytics = await _analytics(connection, where)
    async with database.write() as connection:
        row = await view_store.record_apply(connection, slug, utc_now())
    if row is None:  # deleted in between
        raise ApiError(404, VIEW_NOT_FOUND)
    events, page = _page(rows, limit)
    view = _model(row, analytics)
    return {"data": {"view": view, "events": events, "page": page}}


async def _insert(database: Database, body: NewView, owner: str) -> Any:
    """Check the filters, pick the slug and store; a derived slug lost to a race is re-picked."""
    attempt = 1
    while True:
        try:
            async with database.write() as connection:
                await _check_json_path(connection, body.filters)
                slug = body.slug or await view_store.free_slug(
                    connection, view_store.slug_from_name(body.name)
                )
                return await view_store.insert_view(connection, _new_row(body, slug, owner))
        except ConflictError:
            if body.slug is not None or attempt >= SLUG_ATTEMPTS:
                raise
            attempt += 1


def _new_row(body: NewView, slug: str, owner: str) -> dict[str, Any]:
    now = utc_now()
    return {
        "slug": slug,
        "name": body.name,
        "description": body.description,
        "owner_subject": owner,
        "filters": _stored_filters(body.filters),
        "shared": body.shared,
        "apply_count": 0,
        "last_applied_at": None,
        "created_at": now,
        "updated_at": now,
    }


async def _changed(connection: AsyncConnection, slug: str, changes: dict[str, Any]) -> Any:
    """Store the changes and a new `updatedAt`; a view deleted meanwhile is a 404."""
    row = await view_store.update_view(connection, slug, changes | {"updated_at": utc_now()})
    if row is None:
        raise ApiError(404, VIEW_NOT_FOUND)
    return row


def _stored_filters(filters: ViewFilters) -> dict[str, Any]:
    """Only the filters that are set, in their wire shape (times as ISO with `Z`)."""
    return filters.model_dump(mode="json", exclude_none=True)


def _filters(row: Any) -> ViewFilters:
    return ViewFilters.model_validate(row.filters)


async def _view_or_404(connection: AsyncConnection, slug: str) -> Any:
    row = await view_store.get_view(connection, slug)
    if row is None:
        raise ApiError(404, VIEW_NOT_FOUND)
    return row


async def _owned_view(connection: AsyncConnection, slug: str, subject: str) -> Any:
    """Only the owner changes, shares or deletes a view; shared views are read-only to others."""
    row = await _view_or_404(connection, slug)
    if row.owner_subject != subject:
        raise ApiError(403, "forbidden")
    return row


def _check_readable(row: Any, subject: str | None) -> None:
    if row.shared or row.owner_subject == subject:
        return
    if subject is None:
        raise ApiError(401, "authorization required")
    raise ApiError(403, "forbidden")


async def _check_json_path(connection: AsyncConnection, filters: ViewFilters) -> None:
    """A path the database cannot run is refused on save, not on every later apply."""
    if filters.json_path is None:
        return
    try:
        await json_path_condition(connection, filters.json_path)
    except ApiError as error:
        raise ApiError(400, f"filters.{error.message}", reason=error.reason) from None


async def _event_filter(
    connection: AsyncConnection, filters: ViewFilters
) -> event_store.EventFilter:
    condition = None
    if filters.json_path is not None:
        condition = await json_path_condition(connection, filters.json_path)
    return event_store.EventFilter(
        type=filters.type,
        source=filters.source,
        correlation_id=filters.correlation_id,
        severity=filters.severity,
        occurred_from=filters.occurred_from,
        occurred_to=filters.occurred_to,
        json_path=condition,
    )


async def _present(connection: AsyncConnection, row: Any) -> SavedView:
    where = await _event_filter(connection, _filters(row))
    return _model(row, await _analytics(connection, where))


async def _analytics(connection: AsyncConnection, where: event_store.EventFilter) -> ViewAnalytics:
    activity = await view_store.recent_activity(connection, where, utc_now())
    return ViewAnalytics.model_validate(activity)


def _model(row: Any, analytics: ViewAnalytics) -> SavedView:
    return SavedView.model_validate(
        {
            "slug": row.slug,
            "name": row.name,
            "description": row.description,
            "ownerSubject": row.owner_subject,
            "filters": _filters(row),
            "shared": row.shared,
            "applyCount": row.apply_count,
            "lastAppliedAt": row.last_applied_at,
            "createdAt": row.created_at,
            "updatedAt": row.updated_at,
            "analytics": analytics,
        }
    )


def _page(rows: list[Any], limit: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The page shape and keyset cursor of `GET /admin/events`, so its cursors work here."""
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more:
        last = rows[-1]
        next_cursor = encode_cursor({"at": last.occurred_at.isoformat(), "id": last.id})
    page = {"nextCursor": next_cursor, "hasMore": has_more, "limit": limit}
    return [event_view(row) for row in rows], page
