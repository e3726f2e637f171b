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

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, get_args

import structlog
from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from apphub.api.auth import require
from apphub.api.schemas import GUARDED, Data
from apphub.api.state import Services
from apphub.domain.base import ApiModel, UtcTime, utc_now
from apphub.domain.runs import JobRunStatus, WorkflowRunStatus
from apphub.engine.services import EngineServices
from apphub.queue import JobQueue, QueueCounts, create_queue
from apphub.security import Principal
from apphub.store import metrics as metric_store
from apphub.store import triggers as trigger_store
from apphub.store.database import Database
from apphub.store.tables import job_runs, workflow_runs

log = structlog.get_logger(__name__)

router = APIRouter(tags=["observability"])

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JOB_STATUSES: tuple[str, ...] = get_args(JobRunStatus)
WORKFLOW_STATUSES: tuple[str, ...] = get_args(WorkflowRunStatus)


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


# --- queues --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueReading:
    name: str
    mode: str
    counts: QueueCounts
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        counts, waits = self.counts, self.counts.waits
        return {
            "name": self.name,
            "mode": self.mode,
            "counts": {
                "waiting": counts.waiting,
                "active": counts.active,
                "scheduled": counts.scheduled,
                "failed": counts.failed,
            },
            "metrics": {
                "latencyMs": {
                    "avg": round(waits.avg_ms, 1),
                    "max": round(waits.max_ms, 1),
                    "last": round(waits.last_ms, 1),
                },
                "handled": waits.count,
            },
            "error": self.error,
        }


async def read_queues(services: EngineServices) -> list[QueueReading]:
    """The workflow and job queues, and in scaled mode the event ingress queue.

    The event queue is opened for the read and closed: this process may not consume it.
    """
    readings = [await _read(queue) for queue in (services.workflow_queue, services.job_queue)]
    settings = services.settings
    if not settings.inline:
        event_queue = create_queue(settings.event_queue_name, settings.redis_url)
        try:
            readings.append(await _read(event_queue))
        finally:
            await event_queue.close()
    return readings


async def _read(queue: JobQueue) -> QueueReading:
    try:
        return QueueReading(queue.name, queue.mode, await queue.counts())
    except Exception as error:  # a health page reports an unreachable Redis, it does not fail
        log.warning("queue counts unavailable", queue=queue.name, error=repr(error))
        return QueueReading(queue.name, queue.mode, QueueCounts(0, 0, 0, 0), repr(error))


# --- Prometheus ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Everything a scrape exports, read before the scrape: collectors cannot await."""

    queues: list[QueueReading]
    counters: list[metric_store.Counter]
    job_runs: metric_store.RunSummary
    workflow_runs: metric_store.RunSummary
    backlog: dict[str, metric_store.Backlog]
    event_counts: dict[str, int]


async def take_snapshot(services: EngineServices) -> ClusterSnapshot:
    queues = await read_queues(services)
    return await _database_snapshot(services.database, queues, utc_now())


async def _database_snapshot(
    database: Database, queues: list[QueueReading], now: datetime
) -> ClusterSnapshot:
    async with database.read() as connection:
        return ClusterSnapshot(
            queues=queues,
            counters=await metric_store.read_counters(connection, "apphub_"),
            job_runs=await metric_store.run_summary(connection, job_runs, JOB_STATUSES),
            workflow_runs=await metric_store.run_summary(
                connection, workflow_runs, WORKFLOW_STATUSES
            ),
            backlog=await metric_store.retry_backlog(connection, now),
            event_counts=await metric_store.event_counts(connection),
        )


class ClusterCollector(Collector):
    """Metric families from a ClusterSnapshot: only figures every process shares.

    Queue `active`/`failed` are left out on purpose (each process has its own; see
    `/admin/queue-health`); the running runs in `apphub_workflow_runs` and `apphub_job_runs`
    are the cluster's view of what is active.
    """

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from _queue_families(self.snapshot.queues)
        yield from _event_families(self.snapshot)
        yield from _run_families(self.snapshot)
        yield from _materializer_families(self.snapshot)
        yield from _trigger_families(self.snapshot)


def _queue_families(readings: list[QueueReading]) -> Iterator[Metric]:
    up = GaugeMetricFamily("apphub_queue_up", "1 when the queue could be read", labels=["queue"])
    jobs = GaugeMetricFamily(
        "apphub_queue_jobs_total",
        "Messages in the queue now, by state (waiting: due; scheduled: delayed)",
        labels=["queue", "state"],
    )
    latency = GaugeMetricFamily(
        "apphub_queue_job_latency_ms",
        "Average time a message was due before a consumer took it",
        labels=["queue"],
    )
    waits = SummaryMetricFamily(
        "apphub_queue_job_wait_ms",
        "Messages handed out, and their total wait (for rate()-based averages)",
        labels=["queue"],
    )
    for reading in readings:
        up.add_metric([reading.name], 0 if reading.error else 1)
        if reading.error:
            continue
        counts = reading.counts
        jobs.add_metric([reading.name, "waiting"], counts.waiting)
        jobs.add_metric([reading.name, "scheduled"], counts.scheduled)
        latency.add_metric([reading.name], counts.waits.avg_ms)
        waits.add_metric([reading.name], counts.waits.count, counts.waits.total_ms)
    yield from (up, jobs, latency, waits)


def _event_families(snapshot: ClusterSnapshot) -> Iterator[Metric]:
    ingested = CounterMetricFamily(
        "apphub_events_ingested", "Events admitted by ingress, by source", labels=["source"]
    )
    for source, value in sorted(metric_store.ingested_by_source(snapshot.counters).items()):
        ingested.add_metric([source], value)
    histogram = metric_store.ingress_lag_histogram(snapshot.counters)
    lag = HistogramMetricFamily(
        "apphub_event_ingress_lag_ms",
        "Time from an event's occurredAt to its receipt by ingress",
        buckets=histogram.buckets,
        sum_value=histogram.sum,
    )
    events = GaugeMetricFamily("apphub_events", "Stored events by status", labels=["status"])
    for status, count in sorted(snapshot.event_counts.items()):
        events.add_metric([status], count)
    yield from (ingested, lag, events)


def _run_families(snapshot: ClusterSnapshot) -> Iterator[Metric]:
    for name, summary in (
        ("apphub_workflow_runs", snapshot.workflow_runs),
        ("apphub_job_runs", snapshot.job_runs),
    ):
        family = GaugeMetricFamily(name, "Runs by status", labels=["status"])
        for status, count in summary.status_counts.items():
            family.add_metric([status], count)
        yield family
    backlog = GaugeMetricFamily(
        "apphub_retry_backlog", "Durable retries waiting for their time", labels=["kind"]
    )
    overdue = GaugeMetricFamily(
        "apphub_retry_backlog_overdue", "Retries past their time, not yet taken", labels=["kind"]
    )
    for kind, entry in snapshot.backlog.items():
        backlog.add_metric([kind], entry.count)
        overdue.add_metric([kind], entry.overdue)
    yield from (backlog, overdue)


def _materializer_families(snapshot: ClusterSnapshot) -> Iterator[Metric]:
    decisions = CounterMetricFamily(
        "apphub_materializer_decisions",
        "Asset materializer decisions, by outcome and reason",
        labels=["outcome", "reason"],
    )
    for outcome, reason, value in metric_store.decisions_by_outcome(snapshot.counters):
        decisions.add_metric([outcome, reason], value)
    histogram = metric_store.REACTION_HISTOGRAM.read(snapshot.counters)
    reaction = HistogramMetricFamily(
        "apphub_materializer_reaction_ms",
        "Time from an upstream asset's production to the auto run created for it",
        buckets=histogram.buckets,
        sum_value=histogram.sum,
    )
    yield from (decisions, reaction)


def _trigger_families(snapshot: ClusterSnapshot) -> Iterator[Metric]:
    deliveries = CounterMetricFamily(
        "apphub_event_trigger_deliveries",
        "Event trigger deliveries, by outcome (launched, failed, throttled, skipped)",
        labels=["outcome"],
    )
    for outcome, value in metric_store.trigger_outcomes(snapshot.counters).items():
        deliveries.add_metric([outcome], value)
    yield deliveries
