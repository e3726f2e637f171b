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
from apphub.domain.runs import JobRun
from apphub.store.rows import camel_row, column_values, new_id
from apphub.store.tables import job_definitions, job_runs


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


def _job_run_query() -> Any:
    return select(job_runs, job_definitions.c.slug.label("job_slug")).join(
        job_definitions, job_definitions.c.id == job_runs.c.job_definition_id
    )


async def list_job_runs(
    connection: AsyncConnection, job_definition_id: str, *, limit: int, offset: int = 0
) -> list[JobRun]:
    rows = await connection.execute(
        _job_run_query()
        .where(job_runs.c.job_definition_id == job_definition_id)
        .order_by(job_runs.c.created_at.desc(), job_runs.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [JobRun.model_validate(camel_row(row._mapping)) for row in rows]
