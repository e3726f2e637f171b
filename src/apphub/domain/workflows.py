"""Workflow definitions: steps (job, service, fan-out), their dependencies, assets and triggers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
)

from apphub.domain.assets import AssetDeclaration, unique_assets
from apphub.domain.base import ApiModel, JsonObject, Name, Slug, TimeoutMs, UtcTime
from apphub.domain.retry import RetryPolicy
from apphub.domain.schemas import check_json_schema

StepId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", min_length=1, max_length=100)
]
"""Step ids leave out `:` so that fan-out child ids `<fanout>:<template>:<n>` stay unambiguous."""

ContextKey = Annotated[str, StringConstraints(min_length=1, max_length=200)]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

MAX_STEPS = 100
MAX_DEPENDENCIES = 25
MAX_ASSETS_PER_DIRECTION = 50
MAX_PARALLEL_LIMIT = 1000


class SecretSource(ApiModel):
    source: Literal["env"]
    key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]


class SecretHeader(ApiModel):
    """A header whose value is read from the environment at call time and stored as `***`."""

    secret: SecretSource
    prefix: str | None = Field(default=None, max_length=200)


class ServiceRequest(ApiModel):
    path: str = Field(min_length=1, max_length=2000)
    method: HttpMethod = "GET"
    headers: dict[str, str | SecretHeader] | None = None
    query: dict[str, Any] | None = None
    body: Any = None


class _StepCore(ApiModel):
    """Fields every kind of step has, fan-out templates included."""

    id: StepId
    name: Name | None = None
    parameters: JsonObject | None = None
    timeout_ms: TimeoutMs | None = None
    retry_policy: RetryPolicy | None = None
    produces: list[AssetDeclaration] = Field(
        default_factory=list, max_length=MAX_ASSETS_PER_DIRECTION
    )
    consumes: list[AssetDeclaration] = Field(
        default_factory=list, max_length=MAX_ASSETS_PER_DIRECTION
    )

    @field_validator("produces", "consumes")
    @classmethod
    def _each_asset_once(cls, declarations: list[AssetDeclaration]) -> list[AssetDeclaration]:
        return unique_assets(declarations)


class _JobFields(ApiModel):
    type: Literal["job"] = "job"
    job_slug: Slug
    store_result_as: ContextKey | None = None


class _ServiceFields(ApiModel):
    type: Literal["service"]
    service_slug: Slug
    request: ServiceRequest
    require_healthy: bool = True
    allow_degraded: bool = False
    capture_response: bool = True
    store_response_as: ContextKey | None = None


class JobTemplate(_StepCore, _JobFields):
    """A job step as the template of a fan-out: it has no dependencies of its own."""


class ServiceTemplate(_StepCore, _ServiceFields):
    """A service step as the template of a fan-out."""


class _DependentStep(_StepCore):
    depends_on: list[StepId] = Field(default_factory=list, max_length=MAX_DEPENDENCIES)
    dependents: list[StepId] = Field(
        default_factory=list,
        description="Computed from the other steps' dependsOn; a value sent in is replaced.",
    )


class JobStep(_DependentStep, _JobFields):
    pass


class ServiceStep(_DependentStep, _ServiceFields):
    pass


def _step_type(value: Any) -> str:
    """Steps without a `type` are job steps."""
    if isinstance(value, dict):
        return str(value.get("type", "job"))
    return str(getattr(value, "type", "job"))


STEP_TYPE_ERROR = "type must be one of 'job', 'service', 'fanout'"

FanoutTemplate = Annotated[
    Annotated[JobTemplate, Tag("job")] | Annotated[ServiceTemplate, Tag("service")],
    Discriminator(
        _step_type,
        custom_error_type="step_type",
        custom_error_message="template type must be one of 'job', 'service'",
    ),
]


class FanoutStep(_DependentStep):
    type: Literal["fanout"]
    collection: Any = Field(
        description="A list, or a template such as `{{ steps.seed.result.items }}` naming one."
    )
    template: FanoutTemplate
    max_items: int = Field(default=100, ge=1, le=10_000)
    max_concurrency: int = Field(default=10, ge=1, le=1000)
    store_results_as: ContextKey | None = None


Step = Annotated[
    Annotated[JobStep, Tag("job")]
    | Annotated[ServiceStep, Tag("service")]
    | Annotated[FanoutStep, Tag("fanout")],
    Discriminator(_step_type, custom_error_type="step_type", custom_error_message=STEP_TYPE_ERROR),
]
STEP_TAGS = frozenset({"job", "service", "fanout"})
"""Union tags pydantic puts into error locations; error formatting drops them."""


class WorkflowTrigger(ApiModel):
    """A descriptive trigger entry; event triggers and schedules are their own resources."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-zA-Z0-9._-]*$", max_length=64)]
    options: JsonObject | None = None


def default_triggers() -> list[WorkflowTrigger]:
    return [WorkflowTrigger(type="manual")]


def _check_scheduler_metadata(metadata: JsonObject | None) -> JsonObject | None:
    scheduler = (metadata or {}).get("scheduler")
    if scheduler is None:
        return metadata
    if not isinstance(scheduler, dict):
        raise ValueError("metadata.scheduler must be an object")
    limit = scheduler.get("maxParallel")
    if limit is not None and (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= MAX_PARALLEL_LIMIT
    ):
        raise ValueError(
            f"metadata.scheduler.maxParallel must be an integer from 1 to {MAX_PARALLEL_LIMIT}"
        )
    return metadata


class WorkflowSpecFields(ApiModel):
    name: Name
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    triggers: list[WorkflowTrigger] = Field(default_factory=default_triggers, max_length=50)
    parameters_schema: JsonObject | None = None
    default_parameters: JsonObject = Field(default_factory=dict)
    output_schema: JsonObject | None = None
    metadata: JsonObject | None = None

    @field_validator("triggers")
    @classmethod
    def _manual_when_empty(cls, triggers: list[WorkflowTrigger]) -> list[WorkflowTrigger]:
        return triggers or default_triggers()

    @field_validator("parameters_schema", "output_schema")
    @classmethod
    def _valid_schema(cls, schema: JsonObject | None) -> JsonObject | None:
        return check_json_schema(schema)

    @field_validator("metadata")
    @classmethod
    def _valid_metadata(cls, metadata: JsonObject | None) -> JsonObject | None:
        return _check_scheduler_metadata(metadata)


class WorkflowSpec(WorkflowSpecFields):
    """The body of `POST /workflows`."""

    slug: Slug
    version: int = Field(default=1, ge=1)


class WorkflowPatch(ApiModel):
    """The body of `PATCH /workflows/{slug}`: any subset; the version is bumped by the server."""

    name: Name | None = None
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    steps: list[Step] | None = Field(default=None, min_length=1, max_length=MAX_STEPS)
    triggers: list[WorkflowTrigger] | None = Field(default=None, max_length=50)
    parameters_schema: JsonObject | None = None
    default_parameters: JsonObject | None = None
    output_schema: JsonObject | None = None
    metadata: JsonObject | None = None


class DagEdge(ApiModel):
    from_: StepId = Field(alias="from")
    to: StepId


class DagView(ApiModel):
    adjacency: dict[str, list[str]]
    roots: list[str]
    topological_order: list[str]
    edges: list[DagEdge]


class WorkflowDefinition(WorkflowSpec):
    """A registered workflow as stored and served."""

    id: str
    dag: DagView
    created_at: UtcTime
    updated_at: UtcTime


def job_slugs(steps: list[Any]) -> dict[str, str]:
    """Every job slug the steps name (fan-out templates included), mapped to the first step."""
    named: dict[str, str] = {}
    for step in steps:
        if isinstance(step, JobStep):
            named.setdefault(step.job_slug, step.id)
        elif isinstance(step, FanoutStep) and isinstance(step.template, JobTemplate):
            named.setdefault(step.template.job_slug, step.id)
    return named
