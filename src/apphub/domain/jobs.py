"""Job definitions: a unit of work with a runtime, an entry point, and its limits."""

from __future__ import annotations

import re
import shlex
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from apphub.domain.base import ApiModel, JsonObject, Name, Slug, TimeoutMs, UtcTime
from apphub.domain.retry import RetryPolicy
from apphub.domain.schemas import check_json_schema

JobType = Literal["batch", "service-triggered", "manual"]
JobRuntime = Literal["python", "subprocess", "command"]

_PYTHON_ENTRY_POINT = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
)


def check_entry_point(runtime: JobRuntime, entry_point: str) -> None:
    """`python`/`subprocess` name `package.module:function`; `command` is a shell-split line."""
    if runtime == "command":
        try:
            argv = shlex.split(entry_point)
        except ValueError as error:
            raise ValueError(f"entryPoint is not a valid command line: {error}") from None
        if not argv:
            raise ValueError("entryPoint must name a command")
        return
    if not _PYTHON_ENTRY_POINT.match(entry_point):
        raise ValueError(
            f"entryPoint for runtime {runtime!r} must look like 'package.module:function'"
        )


class JobSpecFields(ApiModel):
    """Everything a client may set on a job; shared by create and the merged result of a patch."""

    name: Name
    type: JobType = "batch"
    runtime: JobRuntime = "python"
    entry_point: str = Field(min_length=1, max_length=2000)
    parameters_schema: JsonObject | None = None
    default_parameters: JsonObject = Field(default_factory=dict)
    output_schema: JsonObject | None = None
    timeout_ms: TimeoutMs | None = None
    retry_policy: RetryPolicy | None = None
    metadata: JsonObject | None = None

    @field_validator("parameters_schema", "output_schema")
    @classmethod
    def _valid_schema(cls, schema: JsonObject | None) -> JsonObject | None:
        return check_json_schema(schema)

    @field_validator("entry_point")
    @classmethod
    def _entry_point_fits_runtime(cls, entry_point: str, info: ValidationInfo) -> str:
        runtime = info.data.get("runtime")  # absent when the runtime itself was invalid
        if runtime is not None:
            check_entry_point(runtime, entry_point)
        return entry_point


class JobSpec(JobSpecFields):
    """The body of `POST /jobs`."""

    slug: Slug
    version: int = Field(default=1, ge=1)


class JobPatch(ApiModel):
    """The body of `PATCH /jobs/{slug}`: any subset of the settable fields."""

    name: Name | None = None
    type: JobType | None = None
    runtime: JobRuntime | None = None
    entry_point: str | None = Field(default=None, min_length=1, max_length=2000)
    parameters_schema: JsonObject | None = None
    default_parameters: JsonObject | None = None
    output_schema: JsonObject | None = None
    timeout_ms: TimeoutMs | None = None
    retry_policy: RetryPolicy | None = None
    metadata: JsonObject | None = None


class JobDefinition(JobSpec):
    """A registered job as stored and served."""

    id: str
    created_at: UtcTime
    updated_at: UtcTime
