"""What a job author imports: the handler's context, its result type, the workflow context.

Every child process of the `subprocess` runtime imports this module, so it uses the standard
library only and does no work at import time.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "JOB_RUN_ID_ENV",
    "WORKFLOW_EVENT_CONTEXT_ENV",
    "JobContext",
    "JobResult",
    "get_workflow_event_context",
    "workflow_event_context",
]

WORKFLOW_EVENT_CONTEXT_ENV = "APPHUB_WORKFLOW_EVENT_CONTEXT"
"""Child processes receive the workflow event context as JSON in this variable."""

JOB_RUN_ID_ENV = "APPHUB_JOB_RUN_ID"
"""Child processes receive their job run id in this variable."""

_current_context: ContextVar[dict[str, Any] | None] = ContextVar(
    "apphub_workflow_event_context", default=None
)


def get_workflow_event_context() -> dict[str, Any] | None:
    """The workflow step this code runs for: the contextvar in-process, else the env variable.

    Keys: workflowDefinitionId, workflowRunId, workflowRunStepId, jobRunId, jobSlug and
    optionally workflowRunKey. None outside a workflow step (or when the variable is not JSON).
    """
    current = _current_context.get()
    if current is not None:
        return dict(current)
    raw = os.environ.get(WORKFLOW_EVENT_CONTEXT_ENV)
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


@contextmanager
def workflow_event_context(value: dict[str, Any] | None) -> Iterator[None]:
    """Make `value` the current workflow event context inside the block.

    Tasks and `asyncio.to_thread` calls started inside copy it, so handlers see it too.
    """
    token = _current_context.set(value)
    try:
        yield
    finally:
        _current_context.reset(token)


def _default_logger() -> logging.Logger:
    return logging.getLogger("apphub.job")


@dataclass
class JobContext:
    """What a handler receives: its parameters, its run id, and a logger for the run's logs."""

    parameters: dict[str, Any]
    run_id: str
    logger: logging.Logger = field(default_factory=_default_logger)
    workflow_event_context: dict[str, Any] | None = None

    publisher: EventPublishing | None = None
    """Set by the runtime that calls the handler (how its events reach apphub)."""

    def publish_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Publish an event from a synchronous handler; the step's context is attached."""
        return self._publishing().publish(event)

    async def publish_event_async(self, event: dict[str, Any]) -> dict[str, Any]:
        """Publish an event from an async handler; the step's context is attached."""
        return await self._publishing().publish_async(event)

    def _publishing(self) -> EventPublishing:
        if self.publisher is None:
            raise RuntimeError("this JobContext has no event publisher (not run by apphub)")
        return self.publisher


class EventPublishing(Protocol):
    """What a JobContext publishes through; apphub's runtimes pass in the event bus's."""

    def publish(self, event: dict[str, Any]) -> dict[str, Any]: ...

    async def publish_async(self, event: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class JobResult:
    """Return this instead of a plain value to report a failure without raising."""

    result: Any = None
    status: Literal["succeeded", "failed"] = "succeeded"
    error_message: str | None = None
