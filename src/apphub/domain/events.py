"""Events: the strict envelope, the workflow context they carry, and what a view derives.

An envelope is `{id?, type, source, occurredAt?, payload?, correlationId?, ttl?, metadata?}`;
unknown keys are refused so a misspelt field never silently disappears.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from apphub.domain.base import ApiModel, JsonObject, UtcTime

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_CONTEXT_BYTES = 2 * 1024
WORKFLOW_CONTEXT_KEY = "__apphubWorkflow"
CONTEXT_FIELDS = (
    "workflowDefinitionId",
    "workflowRunId",
    "workflowRunStepId",
    "jobRunId",
    "jobSlug",
    "workflowRunKey",
)
Severity = Literal["critical", "error", "warning", "info", "debug"]
SEVERITIES: tuple[str, ...] = ("critical", "error", "warning", "info", "debug")

Text256 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


class EventEnvelope(ApiModel):
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        default_factory=lambda: str(uuid.uuid4())
    )
    type: Text256
    source: Text256
    occurred_at: UtcTime = Field(default_factory=lambda: datetime.now(UTC))
    payload: Any = Field(default_factory=dict)
    correlation_id: Annotated[str, StringConstraints(max_length=256)] | None = None
    ttl: int | None = Field(default=None, ge=0, le=31_536_000_000)
    metadata: JsonObject | None = None

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @field_validator("payload")
    @classmethod
    def _small_json(cls, value: Any) -> Any:
        try:
            size = len(json.dumps(value, separators=(",", ":")).encode())
        except (TypeError, ValueError):
            raise ValueError("payload must be JSON") from None
        if size > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}")
        return value


def with_workflow_context(envelope: EventEnvelope, context: dict[str, Any] | None) -> EventEnvelope:
    """Add `metadata.__apphubWorkflow` unless the publisher set it; too big → left out."""
    metadata = dict(envelope.metadata or {})
    if WORKFLOW_CONTEXT_KEY in metadata or not context:
        return envelope
    trimmed = {
        key: str(context[key]).strip()
        for key in CONTEXT_FIELDS
        if context.get(key) not in (None, "")
    }
    if not trimmed or len(json.dumps(trimmed).encode()) > MAX_CONTEXT_BYTES:
        return envelope
    metadata[WORKFLOW_CONTEXT_KEY] = trimmed
    return envelope.model_copy(update={"metadata": metadata})


def severity_of(event_type: str, payload: Any, metadata: Any) -> Severity:
    """An explicit `severity`/`level` wins; else words in the type decide (`…failed`: error)."""
    for source in (metadata, payload):
        if isinstance(source, dict):
            for key in ("severity", "level"):
                value = str(source.get(key, "")).lower()
                if value == "warn":
                    value = "warning"
                if value in SEVERITIES:
                    return value  # type: ignore[return-value]
    lowered = event_type.lower()
    if any(word in lowered for word in ("critical", "fatal")):
        return "critical"
    if any(word in lowered for word in ("failed", "error", "unhealthy")):
        return "error"
    if any(word in lowered for word in ("expired", "warning", "degraded", "throttled")):
        return "warning"
    return "info"


_LINK_KEYS = {
    "workflowDefinitionId": "workflowDefinitionIds",
    "workflowRunId": "workflowRunIds",
    "workflowRunStepId": "workflowRunStepIds",
    "jobRunId": "jobRunIds",
    "assetId": "assetIds",
    "workflowSlug": "workflowSlugs",
    "datasetSlug": "datasetSlugs",
}


def links_of(payload: Any, metadata: Any) -> dict[str, list[str]]:
    """Ids found in the payload and metadata (two levels deep), to link to what they name."""
    found: dict[str, list[str]] = {}

    def visit(value: Any, depth: int) -> None:
        if depth > 2:
            return
        if isinstance(value, dict):
            for key, item in value.items():
                target = _LINK_KEYS.get(key)
                if target and isinstance(item, str) and item not in found.get(target, []):
                    found.setdefault(target, []).append(item)
                visit(item, depth + 1)
        elif isinstance(value, list):
            for item in value[:50]:
                visit(item, depth + 1)

    visit(payload, 0)
    visit(metadata, 0)
    return found


_DERIVED_FIELDS = (
    "assetId",
    "workflowSlug",
    "workflowRunId",
    "partitionKey",
    "reason",
    "producedAt",
    "status",
)


def derived_of(event_type: str, payload: Any) -> dict[str, Any] | None:
    """A small summary of well-known platform events (asset.*, workflow.*, job.*)."""
    if not isinstance(payload, dict) or not event_type.startswith(("asset.", "workflow.", "job.")):
        return None
    summary = {key: payload[key] for key in _DERIVED_FIELDS if key in payload}
    return {"type": event_type, "payload": summary} if summary else None


class EventView(ApiModel):
    """An event as `/admin/events` and `/ws` show it."""

    id: str
    type: str
    source: str
    occurred_at: UtcTime
    received_at: UtcTime
    payload: Any
    correlation_id: str | None = None
    ttl: int | None = None
    metadata: JsonObject | None = None
    severity: Severity
    links: dict[str, list[str]]
    derived: JsonObject | None = None
