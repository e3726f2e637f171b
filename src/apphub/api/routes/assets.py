"""Assets: a workflow's assets, their history and partitions, stale marks, the lineage graph."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.api.auth import require
from apphub.api.schemas import BAD_INPUT, GUARDED, NOT_FOUND, Data
from apphub.api.state import Db, Services
from apphub.automation.ingress import store_events
from apphub.domain.assets import AssetDeclaration, asset_key
from apphub.domain.base import ApiModel, JsonObject, UtcTime, utc_now
from apphub.domain.errors import DefinitionError, NotFoundError
from apphub.domain.events import EventEnvelope
from apphub.domain.lineage import Declared, Latest, StaleMark, asset_graph, expired
from apphub.domain.partitions import key_problem, recent_windows
from apphub.domain.workflows import WorkflowDefinition
from apphub.security import Principal
from apphub.store import assets as asset_store
from apphub.store import workflows as workflow_store

router = APIRouter(tags=["assets"])

ASSET_NOT_FOUND = "asset not found for workflow"
PartitionKey = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class StepRef(ApiModel):
    step_id: str


class Production(ApiModel):
    run_id: str
    step_id: str
    workflow_run_step_id: str
    payload: Any = None
    asset_schema: JsonObject | None = Field(default=None, alias="schema")
    freshness: JsonObject | None = None
    partition_key: str | None = None
    produced_at: UtcTime


class WorkflowAsset(ApiModel):
    asset_id: str
    producers: list[StepRef]
    consumers: list[StepRef]
    available: bool
    latest: Production | None


class PartitionState(ApiModel):
    partition_key: str | None
    materializations: int
    latest: Production | None
    is_stale: bool
    parameters: JsonObject | None = None


class AssetPartitions(ApiModel):
    asset_id: str
    partitioning: JsonObject | None
    partitions: list[PartitionState]


class StaleRequest(ApiModel):
    partition_key: PartitionKey | None = None
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None


class PartitionParametersRequest(ApiModel):
    partition_key: PartitionKey
    parameters: JsonObject


class PartitionKeyRequest(ApiModel):
    partition_key: PartitionKey


class PartitionParameters(ApiModel):
    asset_id: str
    partition_key: str
    parameters: JsonObject
    updated_at: UtcTime


class AssetGraph(ApiModel):
    assets: list[JsonObject]
    edges: list[JsonObject]


# --- reading -----------------------------------------------------------------------------------


@router.get(
    "/workflows/{slug}/assets", response_model=Data[list[WorkflowAsset]], responses=NOT_FOUND
)
async def workflow_assets(slug: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        workflow = await _workflow(connection, slug)
        rows = await workflow_store.list_asset_declarations(connection, workflow.id)
        latest = await asset_store.latest_by_asset(connection, workflow.id)
    assets: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = assets.setdefault(
            row["asset_key"],
            {
                "assetId": row["asset_id"],
                "producers": [],
                "consumers": [],
            },
        )
        entry["producers" if row["direction"] == "produces" else "consumers"].append(
            {"stepId": row["step_id"]}
        )
    for key, entry in assets.items():
        production = latest.get(key)
        entry["available"] = production is not None
        entry["latest"] = _production(production) if production is not None else None
    return {"data": list(assets.values())}


@router.get(
    "/workflows/{slug}/assets/{asset_id}/history",
    response_model=Data[list[Production]],
    responses=BAD_INPUT | NOT_FOUND,
)
async def asset_history(
    slug: str,
    asset_id: str,
    database: Db,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    partition_key: Annotated[str | None, Query(alias="partitionKey", max_length=200)] = None,
) -> dict[str, Any]:
    async with database.read() as connection:
        workflow = await _workflow(connection, slug)
        _declaration(workflow, asset_id)
        rows = await asset_store.history(
            connection, workflow.id, asset_key(asset_id), partition_key, limit
        )
    return {"data": [_production(row) for row in rows]}


@router.get(
    "/workflows/{slug}/assets/{asset_id}/partitions",
    response_model=Data[AssetPartitions],
    responses=BAD_INPUT | NOT_FOUND,
)
async def asset_partitions(
    slug: str,
    asset_id: str,
    database: Db,
    lookback: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict[str, Any]:
    now = utc_now()
    async with database.read() as connection:
        workflow = await _workflow(connection, slug)
        declaration = _declaration(workflow, asset_id)
        key = asset_key(asset_id)
        summaries = await asset_store.partition_summaries(connection, workflow.id, key)
        marks = {
            row.partition_key
            for row in await asset_store.stale_marks(connection, workflow.id)
            if row.asset_key == key
        }
        parameters = await asset_store.partition_parameters(connection, workflow.id, key)
    keys = _partition_keys(declaration, summaries, marks, parameters, lookback, now)
    partitions = []
    for stored in keys:
        total, latest = summaries.get(stored, (0, None))
        stale = stored in marks or (
            latest is not None and expired(_json(declaration.freshness), latest.produced_at, now)
        )
        partitions.append(
            {
                "partitionKey": stored or None,
                "materializations": total,
                "latest": _production(latest) if latest is not None else None,
                "isStale": stale,
                "parameters": parameters.get(stored),
            }
        )
    return {
        "data": {
            "assetId": declaration.asset_id,
            "partitioning": _json(declaration.partitioning),
            "partitions": partitions,
        }
    }


@router.get("/assets/graph", response_model=Data[AssetGraph])
async def graph(database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        declared = await asset_store.declarations(connection)
        latest = await asset_store.latest_everywhere(connection)
        marks = await asset_store.stale_marks(connection)
    return {
        "data": asset_graph(
            [
                Declared(
                    r.workflow_slug, r.step_id, r.direction, r.asset_id, r.asset_key, r.freshness
                )
                for r in declared
            ],
            [
                Latest(
                    r.workflow_slug,
                    r.asset_key,
                    r.partition_key,
                    r.produced_at,
                    r.workflow_run_id,
                    r.step_id,
                )
                for r in latest
            ],
            [
                StaleMark(r.workflow_slug, r.asset_key, r.partition_key, r.requested_at, r.note)
                for r in marks
            ],
            utc_now(),
        )
    }


# --- stale marks and partition parameters ------------------------------------------------------


@router.post(
    "/workflows/{slug}/assets/{asset_id}/stale",
    status_code=204,
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def mark_stale(
    slug: str,
    asset_id: str,
    services: Services,
    principal: Annotated[Principal, require("workflows:run", "asset.mark-stale")],
    request: Annotated[StaleRequest | None, Body()] = None,
) -> Response:
    """Mark an asset (partition) stale; its next production clears the mark.

    An `asset.stale` event is stored with the mark: with an `autoMaterialize` block on the
    asset, the materializer runs its producer (`reason: "manual-stale"`).
    """
    request = request or StaleRequest()
    now = utc_now()
    async with services.database.write() as connection:
        workflow = await _workflow(connection, slug)
        declaration = _produced(workflow, asset_id)
        _check_partition(declaration, request.partition_key, required=False)
        await asset_store.mark_stale(
            connection,
            {
                "workflow_definition_id": workflow.id,
                "asset_id": declaration.asset_id,
                "asset_key": asset_key(declaration.asset_id),
                "partition_key": asset_store.stored_partition(request.partition_key),
                "note": request.note,
                "requested_by": principal.subject,
                "requested_at": now,
            },
        )
        event = stale_event(workflow, declaration.asset_id, request, principal.subject)
        stored = await store_events(connection, [event], now)
    services.ingress.process_soon(stored)
    return Response(status_code=204)


def stale_event(
    workflow: WorkflowDefinition, asset_id: str, request: StaleRequest, subject: str
) -> EventEnvelope:
    return EventEnvelope.model_validate(
        {
            "type": "asset.stale",
            "source": "apphub.api",
            "payload": {
                "assetId": asset_id,
                "workflowDefinitionId": workflow.id,
                "workflowSlug": workflow.slug,
                "partitionKey": request.partition_key,
                "note": request.note,
                "requestedBy": subject,
            },
        }
    )


@router.delete(
    "/workflows/{slug}/assets/{asset_id}/stale",
    status_code=204,
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def clear_stale(
    slug: str,
    asset_id: str,
    database: Db,
    _: Annotated[Principal, require("workflows:run", "asset.clear-stale")],
    request: Annotated[StaleRequest | None, Body()] = None,
) -> Response:
    request = request or StaleRequest()
    async with database.write() as connection:
        workflow = await _workflow(connection, slug)
        declaration = _produced(workflow, asset_id)
        _check_partition(declaration, request.partition_key, required=False)
        await asset_store.clear_stale(
            connection, workflow.id, asset_key(declaration.asset_id), request.partition_key
        )
    return Response(status_code=204)


@router.put(
    "/workflows/{slug}/assets/{asset_id}/partition-parameters",
    response_model=Data[PartitionParameters],
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def set_partition_parameters(
    slug: str,
    asset_id: str,
    request: PartitionParametersRequest,
    database: Db,
    _: Annotated[Principal, require("workflows:write", "asset.set-partition-parameters")],
) -> dict[str, Any]:
    """Parameters a run for this partition gets (used when runs are started for assets)."""
    now = utc_now()
    async with database.write() as connection:
        workflow = await _workflow(connection, slug)
        declaration = _produced(workflow, asset_id)
        _check_partition(declaration, request.partition_key, required=True)
        await asset_store.set_partition_parameters(
            connection,
            {
                "workflow_definition_id": workflow.id,
                "asset_id": declaration.asset_id,
                "asset_key": asset_key(declaration.asset_id),
                "partition_key": request.partition_key,
                "parameters": request.parameters,
                "created_at": now,
                "updated_at": now,
            },
        )
    return {
        "data": {
            "assetId": declaration.asset_id,
            "partitionKey": request.partition_key,
            "parameters": request.parameters,
            "updatedAt": now,
        }
    }


@router.delete(
    "/workflows/{slug}/assets/{asset_id}/partition-parameters",
    status_code=204,
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def delete_partition_parameters(
    slug: str,
    asset_id: str,
    request: PartitionKeyRequest,
    database: Db,
    _: Annotated[Principal, require("workflows:write", "asset.delete-partition-parameters")],
) -> Response:
    async with database.write() as connection:
        workflow = await _workflow(connection, slug)
        declaration = _produced(workflow, asset_id)
        _check_partition(declaration, request.partition_key, required=True)
        await asset_store.delete_partition_parameters(
            connection, workflow.id, asset_key(declaration.asset_id), request.partition_key
        )
    return Response(status_code=204)


# --- helpers -----------------------------------------------------------------------------------


async def _workflow(connection: AsyncConnection, slug: str) -> WorkflowDefinition:
    workflow = await workflow_store.get_workflow(connection, slug)
    if workflow is None:
        raise NotFoundError("workflow not found")
    return workflow


def _declarations(workflow: WorkflowDefinition, asset_id: str) -> list[tuple[str, Any]]:
    key = asset_key(asset_id)
    found = []
    for step in workflow.steps:
        template = getattr(step, "template", None)
        for source in (step, template) if template is not None else (step,):
            for direction in ("produces", "consumes"):
                for declaration in getattr(source, direction):
                    if asset_key(declaration.asset_id) == key:
                        found.append((direction, declaration))
    return found


def _declaration(workflow: WorkflowDefinition, asset_id: str) -> AssetDeclaration:
    """The asset as this workflow declares it (its producing declaration first)."""
    found = sorted(_declarations(workflow, asset_id), key=lambda pair: pair[0] != "produces")
    if not found:
        raise NotFoundError(ASSET_NOT_FOUND)
    declaration: AssetDeclaration = found[0][1]
    return declaration


def _produced(workflow: WorkflowDefinition, asset_id: str) -> AssetDeclaration:
    for direction, declaration in _declarations(workflow, asset_id):
        if direction == "produces":
            produced: AssetDeclaration = declaration
            return produced
    if _declarations(workflow, asset_id):
        raise DefinitionError(
            f"workflow {workflow.slug!r} consumes asset {asset_id!r} but does not produce it",
            reason="not_a_producer",
        )
    raise NotFoundError(ASSET_NOT_FOUND)


def _check_partition(
    declaration: AssetDeclaration, partition_key: str | None, *, required: bool
) -> None:
    if declaration.partitioning is None:
        if partition_key is not None or required:
            raise DefinitionError(
                f"partitionKey: asset {declaration.asset_id!r} is not partitioned",
                reason="not_partitioned",
            )
        return
    problem = key_problem(declaration.partitioning, partition_key)
    if problem is not None:
        raise DefinitionError(f"partitionKey: {problem}", reason="invalid_partition")


def _partition_keys(
    declaration: AssetDeclaration,
    summaries: dict[str, Any],
    marks: set[str],
    parameters: dict[str, Any],
    lookback: int | None,
    now: datetime,
) -> list[str]:
    """The partitions to list: declared keys, recent windows, or the keys seen (dynamic)."""
    partitioning = declaration.partitioning
    if partitioning is None:
        return [asset_store.NO_PARTITION]
    if partitioning.type == "static":
        return list(partitioning.keys)
    if partitioning.type == "timeWindow":
        return recent_windows(partitioning, now, lookback)
    seen = sorted(summaries, key=lambda k: summaries[k][1].produced_at, reverse=True)
    seen += sorted((set(marks) | set(parameters)) - set(seen))
    return seen[: lookback or 100]


def _production(row: Any) -> dict[str, Any]:
    return {
        "runId": row.workflow_run_id,
        "stepId": row.step_id,
        "workflowRunStepId": row.workflow_run_step_id,
        "payload": row.payload,
        "schema": row.asset_schema,
        "freshness": row.freshness,
        "partitionKey": asset_store.served_partition(row.partition_key),
        "producedAt": row.produced_at,
    }


def _json(model: Any) -> Any:
    return model.model_dump(mode="json") if model is not None else None
