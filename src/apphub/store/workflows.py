"""Workflow definitions, their asset declarations, and workflow runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.domain.errors import ConflictError
from apphub.domain.workflows import WorkflowDefinition
from apphub.store.rows import camel_row, column_values
from apphub.store.tables import workflow_asset_declarations, workflow_definitions


def _definition(row: Any) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(camel_row(row._mapping))


def _columns(definition: WorkflowDefinition) -> dict[str, Any]:
    return column_values(definition) | {
        "created_at": definition.created_at,
        "updated_at": definition.updated_at,
    }


async def insert_workflow(connection: AsyncConnection, definition: WorkflowDefinition) -> None:
    try:
        await connection.execute(insert(workflow_definitions).values(_columns(definition)))
    except IntegrityError:
        raise ConflictError(f"a workflow with slug {definition.slug!r} already exists") from None


async def update_workflow(connection: AsyncConnection, definition: WorkflowDefinition) -> None:
    values = _columns(definition)
    del values["id"], values["created_at"]
    await connection.execute(
        update(workflow_definitions)
        .where(workflow_definitions.c.id == definition.id)
        .values(values)
    )


async def get_workflow(connection: AsyncConnection, slug: str) -> WorkflowDefinition | None:
    row = (
        await connection.execute(
            select(workflow_definitions).where(workflow_definitions.c.slug == slug)
        )
    ).first()
    return _definition(row) if row else None


async def get_workflow_by_id(
    connection: AsyncConnection, workflow_id: str
) -> WorkflowDefinition | None:
    row = (
        await connection.execute(
            select(workflow_definitions).where(workflow_definitions.c.id == workflow_id)
        )
    ).first()
    return _definition(row) if row else None


async def list_workflows(connection: AsyncConnection) -> list[WorkflowDefinition]:
    rows = await connection.execute(
        select(workflow_definitions).order_by(workflow_definitions.c.slug)
    )
    return [_definition(row) for row in rows]


async def replace_asset_declarations(
    connection: AsyncConnection,
    workflow_definition_id: str,
    records: Sequence[dict[str, Any]],
    now: datetime,
) -> None:
    """Make the stored declarations of a workflow exactly `records`."""
    await connection.execute(
        delete(workflow_asset_declarations).where(
            workflow_asset_declarations.c.workflow_definition_id == workflow_definition_id
        )
    )
    if records:
        await connection.execute(
            insert(workflow_asset_declarations),
            [
                record
                | {
                    "workflow_definition_id": workflow_definition_id,
                    "created_at": now,
                    "updated_at": now,
                }
                for record in records
            ],
        )


async def list_asset_declarations(
    connection: AsyncConnection, workflow_definition_id: str
) -> list[dict[str, Any]]:
    rows = await connection.execute(
        select(workflow_asset_declarations)
        .where(workflow_asset_declarations.c.workflow_definition_id == workflow_definition_id)
        .order_by(workflow_asset_declarations.c.id)
    )
    return [dict(row._mapping) for row in rows]
