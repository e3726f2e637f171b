"""Register and update job and workflow definitions: validate, build the DAG, persist.

The API and the Python SDK both come through here, so a definition is checked the same
way whichever door it used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.automation.ingress import store_events
from apphub.domain.assets import declaration_record
from apphub.domain.base import iso_ms, utc_now
from apphub.domain.dag import Dag, StepNode, build_dag
from apphub.domain.errors import DefinitionError, NotFoundError
from apphub.domain.events import EventEnvelope
from apphub.domain.jobs import JobDefinition, JobSpec, JobSpecFields
from apphub.domain.workflows import (
    FanoutStep,
    WorkflowDefinition,
    WorkflowSpec,
    WorkflowSpecFields,
    job_slugs,
)
from apphub.store import jobs as job_store
from apphub.store import workflows as workflow_store
from apphub.store.database import Database
from apphub.store.rows import new_id

EventSink = Callable[[Sequence[Any]], None]
"""Where the event rows a change stored go to be processed (the ingress's `process_soon`);
without one they are processed by the ingress's repair loop, within half a minute."""


async def create_job(database: Database, spec: JobSpec) -> JobDefinition:
    async with database.write() as connection:
        return await job_store.insert_job(connection, spec, utc_now())


async def update_job(database: Database, slug: str, changes: dict[str, Any]) -> JobDefinition:
    """Apply a partial update; the merged definition must pass every rule a new one does."""
    async with database.write() as connection:
        current = await job_store.get_job(connection, slug)
        if current is None:
            raise NotFoundError("job not found")
        merged = current.model_dump(mode="json", exclude={"id", "created_at", "updated_at"})
        spec = JobSpec.model_validate(merged | changes)
        return await job_store.replace_job(connection, current, spec, utc_now())


async def create_workflow(
    database: Database, spec: WorkflowSpec, *, events: EventSink | None = None
) -> WorkflowDefinition:
    dag = _dag_of(spec)
    async with database.write() as connection:
        await _check_jobs_exist(connection, spec)
        now = utc_now()
        definition = _definition(
            spec, dag, workflow_id=new_id(), version=spec.version, created_at=now, updated_at=now
        )
        await workflow_store.insert_workflow(connection, definition)
        await workflow_store.replace_asset_declarations(
            connection, definition.id, asset_records(spec), now
        )
        stored = await _record_change(connection, definition, "created")
    if events is not None:
        events(stored)
    return definition


async def update_workflow(
    database: Database, slug: str, changes: dict[str, Any], *, events: EventSink | None = None
) -> WorkflowDefinition:
    async with database.write() as connection:
        current = await workflow_store.get_workflow(connection, slug)
        if current is None:
            raise NotFoundError("workflow not found")
        merged = current.model_dump(mode="json", exclude={"id", "dag", "created_at", "updated_at"})
        spec = WorkflowSpec.model_validate(merged | changes)
        dag = _dag_of(spec)
        await _check_jobs_exist(connection, spec)
        definition = _definition(
            spec,
            dag,
            workflow_id=current.id,
            version=current.version + 1,
            created_at=current.created_at,
            updated_at=utc_now(),
        )
        await workflow_store.update_workflow(connection, definition)
        await workflow_store.replace_asset_declarations(
            connection, definition.id, asset_records(spec), definition.updated_at
        )
        stored = await _record_change(connection, definition, "updated")
    if events is not None:
        events(stored)
    return definition


async def _record_change(
    connection: AsyncConnection, definition: WorkflowDefinition, change: str
) -> list[Any]:
    """`workflow.definition.<change>`, stored with the change: the materializer's graph follows."""
    event = EventEnvelope.model_validate(
        {
            "type": f"workflow.definition.{change}",
            "source": "apphub.registry",
            "occurredAt": iso_ms(definition.updated_at),
            "payload": {
                "workflowDefinitionId": definition.id,
                "workflowSlug": definition.slug,
                "version": definition.version,
            },
        }
    )
    return await store_events(connection, [event], utc_now())


Upserted = Literal["created", "updated", "unchanged"]


async def upsert_job(database: Database, spec: JobSpec) -> Upserted:
    """Create the job, or update it when it differs; an identical one keeps its version."""
    async with database.read() as connection:
        current = await job_store.get_job(connection, spec.slug)
    if current is None:
        await create_job(database, spec)
        return "created"
    fields = set(JobSpecFields.model_fields)
    wanted = spec.model_dump(mode="json", include=fields)
    if current.model_dump(mode="json", include=fields) == wanted:
        return "unchanged"
    await update_job(database, spec.slug, wanted)
    return "updated"


async def upsert_workflow(
    database: Database, spec: WorkflowSpec, *, events: EventSink | None = None
) -> Upserted:
    async with database.read() as connection:
        current = await workflow_store.get_workflow(connection, spec.slug)
    if current is None:
        await create_workflow(database, spec, events=events)
        return "created"
    fields = set(WorkflowSpecFields.model_fields)
    wanted = _comparable(spec.model_dump(mode="json", include=fields))
    if _comparable(current.model_dump(mode="json", include=fields)) == wanted:
        return "unchanged"
    changes = spec.model_dump(mode="json", include=fields)
    await update_workflow(database, spec.slug, changes, events=events)
    return "updated"


def _comparable(workflow: dict[str, Any]) -> dict[str, Any]:
    """Leave out what the server computes (`dependents`) before comparing definitions."""
    steps = [{k: v for k, v in step.items() if k != "dependents"} for step in workflow["steps"]]
    return workflow | {"steps": steps}


def _dag_of(spec: WorkflowSpec) -> Dag:
    return build_dag([StepNode(step.id, tuple(step.depends_on)) for step in spec.steps])


async def _check_jobs_exist(connection: AsyncConnection, spec: WorkflowSpec) -> None:
    named = job_slugs(spec.steps)
    known = await job_store.existing_job_slugs(connection, named)
    for slug, step_id in named.items():
        if slug not in known:
            raise DefinitionError(
                f"step {step_id!r} names job {slug!r}, which is not registered",
                reason="unknown_job",
                detail={"jobSlug": slug, "stepId": step_id},
            )


def _definition(
    spec: WorkflowSpec,
    dag: Dag,
    *,
    workflow_id: str,
    version: int,
    created_at: datetime,
    updated_at: datetime,
) -> WorkflowDefinition:
    wire = spec.model_dump(mode="json")
    for step in wire["steps"]:
        step["dependents"] = dag.adjacency[step["id"]]
    return WorkflowDefinition.model_validate(
        wire
        | {
            "id": workflow_id,
            "version": version,
            "dag": dag.as_json(),
            "createdAt": created_at,
            "updatedAt": updated_at,
        }
    )


def asset_records(spec: WorkflowSpec) -> list[dict[str, Any]]:
    """Declaration rows of every step; a fan-out's template declares for the fan-out step."""
    records: dict[tuple[str, str, str], dict[str, Any]] = {}
    for step in spec.steps:
        sources = [step]
        if isinstance(step, FanoutStep):
            sources.append(step.template)  # type: ignore[arg-type]
        for source in sources:
            for direction in ("produces", "consumes"):
                for declaration in getattr(source, direction):
                    record = declaration_record(step.id, direction, declaration)
                    records.setdefault((step.id, direction, record["asset_key"]), record)
    return list(records.values())
