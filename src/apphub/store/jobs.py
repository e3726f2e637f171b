"""Job definitions and job runs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.domain.errors import ConflictError
from apphub.domain.jobs import JobDefinition, JobSpec
from apphub.store.rows import camel_row, column_values, new_id
from apphub.store.tables import job_definitions


def _definition(row: Any) -> JobDefinition:
    return JobDefinition.model_validate(camel_row(row._mapping))


async def insert_job(connection: AsyncConnection, spec: JobSpec, now: datetime) -> JobDefinition:
    values = column_values(spec) | {
        "id": new_id(),
        "created_at": now,
        "updated_at": now,
    }
    try:
        await connection.execute(insert(job_definitions).values(values))
    except IntegrityError:
        raise ConflictError(f"a job with slug {spec.slug!r} already exists") from None
    return JobDefinition.model_validate(camel_row(values))


async def get_job(connection: AsyncConnection, slug: str) -> JobDefinition | None:
    row = (
        await connection.execute(select(job_definitions).where(job_definitions.c.slug == slug))
    ).first()
    return _definition(row) if row else None


async def list_jobs(connection: AsyncConnection) -> list[JobDefinition]:
    rows = await connection.execute(select(job_definitions).order_by(job_definitions.c.slug))
    return [_definition(row) for row in rows]


async def jobs_by_slug(
    connection: AsyncConnection, slugs: Iterable[str]
) -> dict[str, JobDefinition]:
    wanted = list(set(slugs))
    if not wanted:
        return {}
    rows = await connection.execute(
        select(job_definitions).where(job_definitions.c.slug.in_(wanted))
    )
    return {row.slug: _definition(row) for row in rows}


async def existing_job_slugs(connection: AsyncConnection, slugs: Iterable[str]) -> set[str]:
    wanted = list(set(slugs))
    if not wanted:
        return set()
    rows = await connection.execute(
        select(job_definitions.c.slug).where(job_definitions.c.slug.in_(wanted))
    )
    return set(rows.scalars())


async def replace_job(
    connection: AsyncConnection, current: JobDefinition, spec: JobSpec, now: datetime
) -> JobDefinition:
    """Store `spec` over `current` with the next version; the caller validated the merge."""
    values = column_values(spec, exclude={"slug"}) | {
        "version": current.version + 1,
        "updated_at": now,
    }
    await connection.execute(
        update(job_definitions).where(job_definitions.c.id == current.id).values(values)
    )
    return JobDefinition.model_validate(
        camel_row(
            values | {"id": current.id, "slug": current.slug, "created_at": current.created_at}
        )
    )
