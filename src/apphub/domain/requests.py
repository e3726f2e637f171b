"""Bodies of the routes that start runs."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from apphub.domain.base import ApiModel, JsonObject

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
