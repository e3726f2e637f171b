"""What `/admin/events` and saved views share: cursors, time bounds, the jsonPath condition."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.api.errors import ApiError
from apphub.domain.paging import InvalidCursorError, decode_cursor
from apphub.store import events as event_store


async def json_path_condition(connection: AsyncConnection, path: str) -> Any:
    from apphub.domain.jsonpath import JsonPathError
    from apphub.store.jsonpath_sql import checked_jsonpath_condition

    try:
        return await checked_jsonpath_condition(connection, event_store.events.c.payload, path)
    except JsonPathError as error:
        raise ApiError(400, str(error), reason="invalid_json_path") from None  # "jsonPath: …"


def cursor_position(cursor: str) -> tuple[datetime, str]:
    try:
        position = decode_cursor(cursor)
        moment = datetime.fromisoformat(str(position["at"]))
        event_id = position["id"]
    except (InvalidCursorError, KeyError, ValueError, TypeError):
        raise ApiError(
            400, "cursor: cursor is not one this server issued", reason="invalid_cursor"
        ) from None
    if not isinstance(event_id, str):
        raise ApiError(400, "cursor: cursor is not one this server issued", reason="invalid_cursor")
    return as_utc(moment) or moment, event_id


def as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
