"""Event triggers as declared, stored and served, and the scopes their templates render in.

Every limit of the contract is a constraint here, so a violation is a 400 naming the field.
Templates are checked by `check_templates` when a trigger is saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from apphub.domain.base import ApiModel, JsonObject, Name, UtcTime, iso_ms
from apphub.domain.errors import DefinitionError
from apphub.domain.runs import Record
from apphub.domain.trigger_predicates import Predicate
from apphub.domain.trigger_templates import (
    TemplateProblem,
    as_template,
    check_against,
    check_template,
    render_text,
    render_value,
    template_strings,
)

EventName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._:-]*$", min_length=1, max_length=200)
]
TriggerStatus = Literal["active", "disabled"]
DeliveryStatus = Literal["matched", "launched", "throttled", "skipped", "failed"]
DEFAULT_IDEMPOTENCY_TTL_MS = 86_400_000
MAX_IDEMPOTENCY_TTL_MS = 30 * 86_400_000
TRIGGERED_BY = "event-trigger"
"""`triggeredBy` of the runs event triggers launch."""


class TriggerFields(ApiModel):
    """What a client may set on a trigger (all optional: PATCH sends a subset)."""

    name: Name | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    event_type: EventName | None = None
    event_source: EventName | None = None
    predicates: Annotated[list[Predicate], Field(max_length=25)] | None = None
    parameter_template: JsonObject | None = None
    run_key_template: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    idempotency_key_expression: (
        Annotated[str, StringConstraints(min_length=1, max_length=200)] | None
    ) = None
    idempotency_ttl_ms: Annotated[int, Field(ge=1, le=MAX_IDEMPOTENCY_TTL_MS)] | None = None
    throttle_window_ms: Annotated[int, Field(ge=1, le=86_400_000)] | None = None
    throttle_count: Annotated[int, Field(ge=1, le=10_000)] | None = None
    max_concurrency: Annotated[int, Field(ge=1, le=1_000)] | None = None
    status: TriggerStatus | None = None
    metadata: JsonObject | None = None
    sample_event: JsonObject | None = None
    """Not stored: an event to check the templates against (undefined variables → 400)."""


class TriggerPatch(TriggerFields):
    """`PATCH /workflows/{slug}/triggers/{id}`: merged over the stored trigger."""


class TriggerSpec(TriggerFields):
    """`POST /workflows/{slug}/triggers`: `eventType` is required; `name` defaults to it."""

    event_type: EventName
    predicates: Annotated[list[Predicate], Field(max_length=25)] = Field(default_factory=list)
    idempotency_ttl_ms: Annotated[int, Field(ge=1, le=MAX_IDEMPOTENCY_TTL_MS)] = (
        DEFAULT_IDEMPOTENCY_TTL_MS
    )
    status: TriggerStatus = "active"

    @model_validator(mode="after")
    def _throttle_pair(self) -> TriggerSpec:
        if (self.throttle_window_ms is None) != (self.throttle_count is None):
            missing = "throttleCount" if self.throttle_count is None else "throttleWindowMs"
            raise ValueError(f"{missing} is required with the other throttle setting")
        return self


class Trigger(Record):
    id: str
    workflow_definition_id: str
    workflow_slug: str
    name: str
    description: str | None = None
    event_type: str
    event_source: str | None = None
    predicates: list[Predicate]
    parameter_template: JsonObject | None = None
    run_key_template: str | None = None
    idempotency_key_expression: str | None = None
    idempotency_ttl_ms: int
    throttle_window_ms: int | None = None
    throttle_count: int | None = None
    max_concurrency: int | None = None
    status: TriggerStatus
    version: int
    metadata: JsonObject | None = None
    paused_until: UtcTime | None = None
    """Set while the trigger is paused after repeated failures (beyond CONTRACT)."""
    created_at: UtcTime
    updated_at: UtcTime


class Delivery(Record):
    id: str
    trigger_id: str
    event_id: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None = None
    workflow_run_id: str | None = None
    dedupe_key: str | None = None
    next_attempt_at: UtcTime | None = None
    created_at: UtcTime
    updated_at: UtcTime


# --- template scopes -----------------------------------------------------------------------


def event_scope(event: Any) -> dict[str, Any]:
    """A stored event (row or envelope) as templates and predicates see it: the envelope."""
    occurred = getattr(event, "occurred_at", None)
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "occurredAt": iso_ms(occurred) if isinstance(occurred, datetime) else occurred,
        "payload": event.payload,
        "correlationId": event.correlation_id,
        "ttl": getattr(event, "ttl_ms", getattr(event, "ttl", None)),
        "metadata": event.metadata,
    }


def trigger_scope(trigger: Any) -> dict[str, Any]:
    return {
        "id": trigger.id,
        "name": trigger.name,
        "version": trigger.version,
        "eventType": trigger.event_type,
        "eventSource": trigger.event_source,
        "workflowSlug": getattr(trigger, "workflow_slug", None),
        "metadata": trigger.metadata or {},
    }


def scope(event: Mapping[str, Any], trigger: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {"event": dict(event), "trigger": dict(trigger), "now": iso_ms(now)}


def render_parameters(template: JsonObject | None, context: Mapping[str, Any]) -> JsonObject:
    """The run's parameters from `parameterTemplate` (TemplateProblem when it cannot render)."""
    rendered = render_value(template or {}, context)
    return rendered if isinstance(rendered, dict) else {}


def render_key(template: str | None, context: Mapping[str, Any]) -> str | None:
    """A run key or idempotency key: the rendered text, stripped; empty means none."""
    if template is None:
        return None
    return render_text(template, context).strip() or None


def idempotency_key(trigger: Any, context: Mapping[str, Any]) -> str | None:
    expression = trigger.idempotency_key_expression
    key = render_key(as_template(expression), context) if expression else None
    return key[:500] if key else None


# --- checks on save ------------------------------------------------------------------------


def _invalid(field: str, rule: str, message: str) -> DefinitionError:
    problem = {"field": field, "rule": rule, "message": message}
    return DefinitionError(
        f"{field}: {message}", reason="validation_failed", detail={"errors": [problem]}
    )


def _templates(spec: TriggerSpec) -> list[tuple[str, str]]:
    found = template_strings(spec.parameter_template or {}, "parameterTemplate")
    if spec.run_key_template is not None:
        found.append(("runKeyTemplate", spec.run_key_template))
    if spec.idempotency_key_expression is not None:
        found.append(("idempotencyKeyExpression", as_template(spec.idempotency_key_expression)))
    return found


def check_templates(spec: TriggerSpec, sample: Mapping[str, Any] | None, now: datetime) -> None:
    """Syntax and filters always; undefined variables when a sample event is given."""
    for field, text in _templates(spec):
        try:
            check_template(text)
        except TemplateProblem as problem:
            raise _invalid(field, "template_invalid", str(problem)) from None
    if sample is None:
        return
    context = scope(sample, {"id": "", "name": spec.name or spec.event_type, "version": 1}, now)
    for field, text in _templates(spec):
        if field == "runKeyTemplate":
            continue
        try:
            check_against(text, context)
        except TemplateProblem as problem:
            raise _invalid(field, "template_undefined", str(problem)) from None
    if spec.run_key_template is not None:
        parameters = render_parameters(spec.parameter_template, context)
        try:
            check_against(spec.run_key_template, context | {"parameters": parameters})
        except TemplateProblem as problem:
            raise _invalid("runKeyTemplate", "template_undefined", str(problem)) from None


def sample_scope(sample: JsonObject, spec: TriggerSpec) -> dict[str, Any]:
    """The envelope a sample event stands for (type and source default to the trigger's)."""
    return {
        "id": sample.get("id", "sample-event"),
        "type": sample.get("type", spec.event_type),
        "source": sample.get("source", spec.event_source or "sample"),
        "occurredAt": sample.get("occurredAt", "1970-01-01T00:00:00.000Z"),
        "payload": sample.get("payload", {}),
        "correlationId": sample.get("correlationId"),
        "ttl": sample.get("ttl"),
        "metadata": sample.get("metadata"),
    }
