"""The audit log: one row per guarded call, allowed or refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.store.tables import audit_logs

Outcome = Literal["succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    subject: str | None
    action: str
    resource: str
    outcome: Outcome
    reason: str | None
    status_code: int | None
    at: datetime


async def record_audit(connection: AsyncConnection, entry: AuditEntry) -> None:
    await connection.execute(
        insert(audit_logs).values(
            subject=entry.subject,
            action=entry.action,
            resource=entry.resource,
            outcome=entry.outcome,
            reason=entry.reason,
            status_code=entry.status_code,
            at=entry.at,
        )
    )


async def list_audit(
    connection: AsyncConnection, *, limit: int, before_id: int | None = None
) -> list[dict[str, Any]]:
    """Newest first; `before_id` continues a page (keyset on the growing id)."""
    query = select(audit_logs).order_by(audit_logs.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(audit_logs.c.id < before_id)
    return [dict(row._mapping) for row in await connection.execute(query)]
