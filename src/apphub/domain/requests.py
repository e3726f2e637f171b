"""Bodies of the routes that start runs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import Field, StringConstraints
from pydantic.alias_generators import to_camel

from apphub.domain.base import ApiModel, JsonObject, utc_now
from apphub.domain.parameters import check_parameters, merge_parameters
from apphub.domain.partitions import check_run_partition
from apphub.domain.runs import WorkflowRun
from apphub.domain.workflows import WorkflowDefinition

RunKey = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]+$", min_length=1, max_length=120)
]


class WorkflowRunRequest(ApiModel):
    """`POST /workflows/{slug}/run`."""

    parameters: JsonObject = Field(default_factory=dict)
    triggered_by: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "manual"
    trigger: JsonObject | None = None
    partition_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    run_key: RunKey | None = None


class JobRunRequest(ApiModel):
    """`POST /jobs/{slug}/run`."""

    parameters: JsonObject = Field(default_factory=dict)


def workflow_run_values(
    workflow: WorkflowDefinition, request: WorkflowRunRequest, run_id: str | None = None
) -> dict[str, Any]:
    """The row of a new pending run, with a snapshot of the workflow it will execute.

    Raises DefinitionError when the parameters fail the workflow's schema or the partition
    key is not one its partitioned assets allow.
    """
    parameters = merge_parameters(workflow.default_parameters, request.parameters)
    check_parameters(workflow.parameters_schema, parameters)
    check_run_partition(workflow.steps, request.partition_key)
    now = utc_now()
    return {
        "id": run_id or str(uuid.uuid4()),
        "workflow_definition_id": workflow.id,
        "status": "pending",
        "parameters": parameters,
        "context": {"shared": {}},
        "workflow_snapshot": workflow.model_dump(mode="json"),
        "metrics": {"totalSteps": len(workflow.steps), "completedSteps": 0},
        "triggered_by": request.triggered_by,
        "trigger": request.trigger or {"type": request.triggered_by},
        "partition_key": request.partition_key,
        "run_key": request.run_key,
        "run_key_normalized": request.run_key.lower() if request.run_key else None,
        "created_at": now,
        "updated_at": now,
    }


def pending_run(values: dict[str, Any], workflow_slug: str) -> WorkflowRun:
    """The run a new row describes, as the API shows it."""
    record = {to_camel(key): value for key, value in values.items()}
    record |= {"workflowSlug": workflow_slug, "context": {"shared": {}, "steps": {}}}
    return WorkflowRun.model_validate(record)
