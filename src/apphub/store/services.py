"""The service registry: definitions and the health their last check saw."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.domain.errors import ConflictError
from apphub.domain.services import Service, ServiceSpec
from apphub.store.rows import camel_row, column_values, new_id
from apphub.store.tables import services


def _service(row: Any) -> Service:
    return Service.model_validate(camel_row(row._mapping))


async def insert_service(connection: AsyncConnection, spec: ServiceSpec, now: datetime) -> Service:
    values = column_values(spec) | {
        "id": new_id(),
        "status": "unknown",
        "created_at": now,
        "updated_at": now,
    }
    try:
        await connection.execute(insert(services).values(values))
    except IntegrityError:
        raise ConflictError(f"a service with slug {spec.slug!r} already exists") from None
    return Service.model_validate(camel_row(values))


async def get_service(
    connection: AsyncConnection, slug: str, *, lock: bool = False
) -> Service | None:
    statement = select(services).where(services.c.slug == slug)
    if lock:
        statement = statement.with_for_update()
    row = (await connection.execute(statement)).first()
    return _service(row) if row else None


async def list_services(connection: AsyncConnection) -> list[Service]:
    rows = await connection.execute(select(services).order_by(services.c.slug))
    return [_service(row) for row in rows]


async def update_service(
    connection: AsyncConnection, slug: str, values: dict[str, Any]
) -> Service | None:
    await connection.execute(update(services).where(services.c.slug == slug).values(values))
    return await get_service(connection, slug)


async def delete_service(connection: AsyncConnection, slug: str) -> bool:
    result = await connection.execute(delete(services).where(services.c.slug == slug))
    return bool(result.rowcount)


ADDRESS_KEYS = frozenset({"id", "base_url", "health_path"})
"""What identifies the check in a health reading, as against what it saw."""


async def record_health(
    connection: AsyncConnection, readings: Sequence[dict[str, Any]]
) -> dict[str, str]:
    """Store each check (`id`, the `base_url` and `health_path` it checked, `status`,
    `status_message`, `latency_ms`, `last_checked_at`); returns the status each service had
    before, for those that still exist at the address checked (a check of an address the
    service has since moved from says nothing about it, and is dropped)."""
    if not readings:
        return {}
    rows = await connection.execute(
        select(services.c.id, services.c.status, services.c.base_url, services.c.health_path)
        .where(services.c.id.in_([reading["id"] for reading in readings]))
        .order_by(services.c.id)
        .with_for_update()
    )
    current = {row.id: row for row in rows}
    before: dict[str, str] = {}
    for reading in readings:
        row = current.get(reading["id"])
        if row is None or (row.base_url, row.health_path) != (
            reading["base_url"],
            reading["health_path"],
        ):
            continue
        before[row.id] = row.status
        values = {key: value for key, value in reading.items() if key not in ADDRESS_KEYS}
        await connection.execute(update(services).where(services.c.id == row.id).values(values))
    return before
