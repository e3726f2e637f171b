"""Cron schedules: definitions, and the watermark that moves with the runs they create."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.store.tables import workflow_definitions
from apphub.store.tables import workflow_schedules as schedules


def _query() -> Select[Any]:
    return select(schedules, workflow_definitions.c.slug.label("workflow_slug")).join(
        workflow_definitions, workflow_definitions.c.id == schedules.c.workflow_definition_id
    )


async def insert_schedule(connection: AsyncConnection, values: dict[str, Any]) -> None:
    await connection.execute(insert(schedules).values(values))


async def update_schedule(
    connection: AsyncConnection, schedule_id: str, values: dict[str, Any]
) -> None:
    await connection.execute(update(schedules).where(schedules.c.id == schedule_id).values(values))


async def delete_schedule(connection: AsyncConnection, schedule_id: str) -> bool:
    result = await connection.execute(delete(schedules).where(schedules.c.id == schedule_id))
    return result.rowcount == 1


async def get_schedule(connection: AsyncConnection, schedule_id: str, *, lock: bool = False) -> Any:
    query = _query().where(schedules.c.id == schedule_id)
    if lock:
        query = query.with_for_update(of=schedules)
    return (await connection.execute(query)).first()


async def list_schedules(connection: AsyncConnection, workflow_id: str | None = None) -> list[Any]:
    query = _query()
    if workflow_id is not None:
        query = query.where(schedules.c.workflow_definition_id == workflow_id)
    return list(await connection.execute(query.order_by(schedules.c.created_at, schedules.c.id)))
