"""`/admin`: operator views. Reading them needs `admin:read`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from apphub.api.auth import require
from apphub.api.errors import ApiError
from apphub.api.schemas import BAD_INPUT, GUARDED, Data, Page
from apphub.api.state import Db
from apphub.domain.base import ApiModel, UtcTime
from apphub.domain.paging import InvalidCursorError, decode_cursor, encode_cursor
from apphub.security import Principal
from apphub.store.audit import list_audit
from apphub.store.rows import camel_row

router = APIRouter(prefix="/admin", tags=["admin"])


class AuditLog(ApiModel):
    id: int
    subject: str | None
    action: str
    resource: str
    outcome: str
    reason: str | None
    status_code: int | None
    at: UtcTime


class AuditLogPage(ApiModel):
    audit_logs: list[AuditLog]
    page: Page


@router.get("/audit-logs", response_model=Data[AuditLogPage], responses=BAD_INPUT | GUARDED)
async def audit_logs(
    database: Db,
    _: Annotated[Principal, require("admin:read", "audit.read")],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    before_id = _cursor_id(cursor) if cursor else None
    async with database.read() as connection:
        rows = await list_audit(connection, limit=limit + 1, before_id=before_id)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor({"id": rows[-1]["id"]}) if has_more else None
    return {
        "data": {
            "auditLogs": [AuditLog.model_validate(camel_row(row)) for row in rows],
            "page": {"nextCursor": next_cursor, "hasMore": has_more, "limit": limit},
        }
    }


def _cursor_id(cursor: str) -> int:
    try:
        position = decode_cursor(cursor)
    except InvalidCursorError as error:
        raise ApiError(400, f"cursor: {error}", reason="invalid_cursor") from None
    value = position.get("id")
    if not isinstance(value, int):
        raise ApiError(400, "cursor: cursor is not one this server issued", reason="invalid_cursor")
    return value
