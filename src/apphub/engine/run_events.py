"""Persisted events the orchestrator raises besides `asset.produced`: the end of an auto run
or of a run an event trigger launched.

Such a run's end is written as an event in the run's last transaction, so the asset
materializer (which owns an auto run's claim and cooldown) and the trigger worker (whose
throttled deliveries wait for a trigger's runs to end) hear of it even when they run in
another process or were down when the run ended. Other runs' ends stay live frames only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apphub.automation.auto_runs import TRIGGERED_BY
from apphub.domain.base import iso_ms
from apphub.domain.events import EventEnvelope
from apphub.domain.triggers import TRIGGERED_BY as EVENT_TRIGGER
from apphub.engine.assets import EVENT_SOURCE
from apphub.store.rows import new_id


def run_ended_event(
    run: Any,
    status: str,
    workflow_slug: str,
    started_at: datetime | None,
    completed_at: datetime,
) -> EventEnvelope:
    """`workflow.run.<status>` for a run row (ids, trigger and partition are read from it)."""
    return EventEnvelope.model_validate(
        {
            "id": new_id(),
            "type": f"workflow.run.{status}",
            "source": EVENT_SOURCE,
            "occurredAt": iso_ms(completed_at),
            "correlationId": run.id,
            "payload": {
                "workflowRunId": run.id,
                "workflowDefinitionId": run.workflow_definition_id,
                "workflowSlug": workflow_slug,
                "status": status,
                "partitionKey": run.partition_key,
                "triggeredBy": run.triggered_by,
                "startedAt": iso_ms(started_at) if started_at else None,
                "completedAt": iso_ms(completed_at),
            },
        }
    )


def announces_end(run: Any) -> bool:
    return run.triggered_by in (TRIGGERED_BY, EVENT_TRIGGER)
