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


async def record_health(
    connection: AsyncConnection, readings: Sequence[dict[str, Any]]
) -> dict[str, str]:
    """Store each check (`id`, `status`, `status_message`, `latency_ms`, `last_checked_at`);
    returns the status each service had before, for the ones that still exist."""
    if not readings:
        return {}
    ids = [reading["id"] for reading in readings]
    rows = await connection.execute(
        select(services.c.id, services.c.status)
        .where(services.c.id.in_(ids))
        .order_by(services.c.id)
        .with_for_update()
    )
    before = {row.id: row.status for row in rows}
    for reading in readings:
        if reading["id"] in before:
            values = {key: value for key, value in reading.items() if key != "id"}
            await connection.execute(
                update(services).where(services.c.id == reading["id"]).values(values)
            )
    return before
