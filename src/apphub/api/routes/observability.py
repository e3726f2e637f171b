"""Health pages and metrics: `/admin/event-health`, `/admin/queue-health`, `/metrics`,
`/metrics/prometheus`.

Whose figures are whose:
- Cluster-wide (read from the database, or from Redis in scaled mode), so every process
  answers the same: run counts by status, mean durations and failure rates; the retry
  backlog; events by status; the shared counters (events ingested per source, the
  ingress-lag histogram); a Redis queue's `waiting` and `scheduled` counts and its hand-off
  latency (every consumer adds its figures to Redis every 0.5 s).
- This process's own: `/admin/event-health` `sources` (what this process's ingress admitted
  or throttled, and the lag it saw), `pausedSources` (its rate-limit windows), and a queue's
  `active` and `failed` (its own handler calls; for the event queue, read through a handle
  opened for the request, both are 0). An inline queue lives in one process, so in inline
  mode that process's figures are the whole truth.
`/metrics/prometheus` exports only the cluster-wide figures, so any process may be scraped
(or all of them) and the totals stay right however many processes run.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest

from apphub.api.auth import require
from apphub.api.cluster_metrics import (
    JOB_STATUSES,
    WORKFLOW_STATUSES,
    ClusterCollector,
    read_queues,
    take_snapshot,
)
from apphub.api.schemas import GUARDED, Data
from apphub.api.state import Services
from apphub.domain.base import ApiModel, UtcTime, utc_now
from apphub.security import Principal
from apphub.store import metrics as metric_store
from apphub.store import triggers as trigger_store
from apphub.store.tables import job_runs, workflow_runs

log = structlog.get_logger(__name__)

router = APIRouter(tags=["observability"])

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# --- bodies --------------------------------------------------------------------------------


class LagMs(ApiModel):
    avg: float
    latest: float
    max: float


class SourceHealth(ApiModel):
    ingested: int
    throttled: int
    dropped: int
    lag_ms: LagMs


class PausedSource(ApiModel):
    source: str
    until: UtcTime


class RateLimitView(ApiModel):
    source: str
    limit: int
    interval_ms: int
    pause_ms: int


class BacklogView(ApiModel):
    count: int
    overdue: int
    next_due_at: UtcTime | None


class RetryBacklog(ApiModel):
    events: BacklogView
    workflow_steps: BacklogView
    job_runs: BacklogView
    deliveries: BacklogView


class PausedTrigger(ApiModel):
    trigger_id: str
    workflow_slug: str
    name: str
    until: UtcTime


class TriggerHealth(ApiModel):
    """Delivery outcomes so far, cluster-wide: launched, failed, throttled, skipped."""

    deliveries: dict[str, float]


class EventHealth(ApiModel):
    generated_at: UtcTime
    sources: dict[str, SourceHealth]
    paused_sources: list[PausedSource]
    rate_limits: list[RateLimitView]
    retry_backlog: RetryBacklog
    event_counts: dict[str, int]
    triggers: TriggerHealth
    paused_triggers: list[PausedTrigger]


class QueueStateCounts(ApiModel):
    waiting: int
    active: int
    scheduled: int
    failed: int


class LatencyMs(ApiModel):
    avg: float
    max: float
    last: float


class QueueMetrics(ApiModel):
    latency_ms: LatencyMs
    handled: int


class QueueView(ApiModel):
    name: str
    mode: str
    counts: QueueStateCounts
    metrics: QueueMetrics
    error: str | None = None
    """Set when the queue could not be read (Redis down); the figures are then zeros."""


class QueueHealth(ApiModel):
    generated_at: UtcTime
    inline_mode: bool
    queues: list[QueueView]


class RunTotals(ApiModel):
    total: int
    status_counts: dict[str, int]
    average_duration_ms: float | None
    failure_rate: float


class MetricsSummary(ApiModel):
    generated_at: UtcTime
    jobs: RunTotals
    workflows: RunTotals


# --- routes --------------------------------------------------------------------------------


@router.get("/admin/event-health", response_model=Data[EventHealth], responses=GUARDED)
async def event_health(
    services: Services, _: Annotated[Principal, require("admin:read", "events.health")]
) -> dict[str, Any]:
    """Ingress per source (this process) beside the retry backlog and event counts (cluster)."""
    now = utc_now()
    async with services.database.read() as connection:
        backlog = await metric_store.retry_backlog(connection, now)
        counts = await metric_store.event_counts(connection)
        counters = await metric_store.read_counters(connection, metric_store.TRIGGER_DELIVERIES)
        paused = await trigger_store.paused_triggers(connection, now)
    health = services.ingress.health()
    return {
        "data": {
            "generatedAt": now,
            "sources": health["sources"],
            "pausedSources": health["pausedSources"],
            "rateLimits": health["rateLimits"],
            "retryBacklog": {kind: _backlog_json(entry) for kind, entry in backlog.items()},
            "eventCounts": counts,
            "triggers": {"deliveries": metric_store.trigger_outcomes(counters)},
            "pausedTriggers": [
                {
                    "triggerId": row.id,
                    "workflowSlug": row.workflow_slug,
                    "name": row.name,
                    "until": row.paused_until,
                }
                for row in paused
            ],
        }
    }


@router.get("/admin/queue-health", response_model=Data[QueueHealth], responses=GUARDED)
async def queue_health(
    services: Services, _: Annotated[Principal, require("admin:read", "queues.health")]
) -> dict[str, Any]:
    readings = await read_queues(services)
    return {
        "data": {
            "generatedAt": utc_now(),
            "inlineMode": services.settings.inline,
            "queues": [reading.as_json() for reading in readings],
        }
    }


@router.get("/metrics", response_model=Data[MetricsSummary])
async def metrics(services: Services) -> dict[str, Any]:
    """Run totals for dashboards; open like the Prometheus endpoint, and cluster-wide."""
    async with services.database.read() as connection:
        jobs = await metric_store.run_summary(connection, job_runs, JOB_STATUSES)
        workflows = await metric_store.run_summary(connection, workflow_runs, WORKFLOW_STATUSES)
    return {
        "data": {"generatedAt": utc_now(), "jobs": jobs.as_json(), "workflows": workflows.as_json()}
    }


@router.get(
    "/metrics/prometheus",
    response_class=Response,
    responses={200: {"content": {PROMETHEUS_CONTENT_TYPE: {}}, "description": "Metrics"}},
)
async def prometheus(services: Services) -> Response:
    """Built at scrape time from shared state only, so every process answers the same."""
    snapshot = await take_snapshot(services)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(snapshot))
    return Response(generate_latest(registry), media_type=PROMETHEUS_CONTENT_TYPE)


def _backlog_json(backlog: metric_store.Backlog) -> dict[str, Any]:
    return {"count": backlog.count, "overdue": backlog.overdue, "nextDueAt": backlog.next_due_at}
