"""What a finished step's assets become: production rows and `asset.produced` events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apphub.domain.base import iso_ms
from apphub.domain.capture import Production
from apphub.domain.events import EventEnvelope
from apphub.engine.records import StepRecord
from apphub.store.assets import stored_partition
from apphub.store.rows import new_id

EVENT_SOURCE = "apphub.orchestrator"


@dataclass(frozen=True)
class RunIdentity:
    workflow_definition_id: str
    workflow_slug: str
    run_id: str
    run_key: str | None


def production_row(
    run: RunIdentity, record: StepRecord, production: Production, now: datetime
) -> dict[str, Any]:
    declaration = production.declaration
    return {
        "workflow_definition_id": run.workflow_definition_id,
        "workflow_run_id": run.run_id,
        "workflow_run_step_id": record.row_id,
        "step_id": record.step_id,
        "asset_id": declaration.asset_id,
        "asset_key": production.asset_key,
        "partition_key": stored_partition(production.partition_key),
        "payload": production.payload,
        "asset_schema": declaration.asset_schema,
        "freshness": _json(declaration.freshness),
        "produced_at": production.produced_at,
        "created_at": now,
    }


def produced_event(
    run: RunIdentity, record: StepRecord, production: Production, job_slug: str | None
) -> EventEnvelope:
    """The `asset.produced` envelope (CONTRACT "Assets" payload, workflow context metadata)."""
    produced_at = iso_ms(production.produced_at)
    context = {
        "workflowDefinitionId": run.workflow_definition_id,
        "workflowRunId": run.run_id,
        "workflowRunStepId": record.row_id,
        "jobRunId": record.job_run_id,
        "jobSlug": job_slug,
    }
    if run.run_key:
        context["workflowRunKey"] = run.run_key
    return EventEnvelope.model_validate(
        {
            "id": new_id(),
            "type": "asset.produced",
            "source": EVENT_SOURCE,
            "occurredAt": produced_at,
            "correlationId": run.run_id,
            "payload": {
                "assetId": production.asset_id,
                "workflowDefinitionId": run.workflow_definition_id,
                "workflowSlug": run.workflow_slug,
                "workflowRunId": run.run_id,
                "workflowRunStepId": record.row_id,
                "stepId": record.step_id,
                "producedAt": produced_at,
                "partitionKey": production.partition_key,
                "freshness": _json(production.declaration.freshness),
            },
            "metadata": {"__apphubWorkflow": context},
        }
    )


def _json(model: Any) -> Any:
    return model.model_dump(mode="json") if model is not None else None
