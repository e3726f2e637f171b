"""What `/admin/queue-health` and `/metrics/prometheus` read: the queues, and a snapshot of the
cluster-wide figures exported as Prometheus families.

Only shared state goes into the export (the database, Redis), so any process may be scraped,
or all of them, and the totals stay right however many processes run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

import structlog
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from apphub.domain.base import utc_now
from apphub.domain.runs import JobRunStatus, WorkflowRunStatus
from apphub.engine.services import EngineServices
from apphub.queue import JobQueue, QueueCounts, create_queue
from apphub.store import metrics as metric_store
from apphub.store.database import Database
from apphub.store.tables import job_runs, workflow_runs

log = structlog.get_logger(__name__)

JOB_STATUSES: tuple[str, ...] = get_args(JobRunStatus)
WORKFLOW_STATUSES: tuple[str, ...] = get_args(WorkflowRunStatus)


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
