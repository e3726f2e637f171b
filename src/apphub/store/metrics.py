"""Cluster-wide figures: shared counters, and aggregates of runs, retries and events.

Everything here is read from (or added to) the database, never from one process's memory, so
every process that answers `/metrics`, `/metrics/prometheus` or a health page answers the same
however many processes run. Counters live in `metric_counters`, one row per (name, labels):
writers add to a row in the same transaction as the work they count, so a count is never
lost or doubled by a crash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from apphub.domain.runs import TERMINAL_RUN_STATUSES
from apphub.store import events as event_store
from apphub.store.dialect import upsert_adding
from apphub.store.tables import (
    job_runs,
    metric_counters,
    workflow_events,
    workflow_run_steps,
    workflow_trigger_deliveries,
)

CounterKey = tuple[str, str]
"""(name, labels as canonical JSON): the key of one counter row."""

EVENTS_INGESTED = "apphub_events_ingested_total"
INGRESS_LAG = "apphub_event_ingress_lag_ms"
INGRESS_LAG_BUCKETS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Upper bounds of the ingress-lag histogram; `+Inf` follows."""
INF = "+Inf"
LABELS_MAX = 500
"""The width of `metric_counters.labels`: longer label values are shortened to fit."""
_SHORT_VALUE = 40


# --- counters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counter:
    name: str
    labels: dict[str, str]
    value: float


def labels_key(labels: Mapping[str, str]) -> str:
    """Labels as the JSON stored in `labels`: sorted keys, so one label set is one row.

    A value that would overflow the column (a 256-character event source full of escapes)
    keeps its first characters and gains a digest, so distinct values stay distinct rows.
    """
    key = _dumps(labels)
    if len(key) <= LABELS_MAX:
        return key
    key = _dumps({name: _shortened(value) for name, value in labels.items()})
    if len(key) <= LABELS_MAX:
        return key
    return _dumps({name: _digest(value) for name, value in labels.items()})


def _dumps(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


def _shortened(value: str) -> str:
    return value if len(value) <= _SHORT_VALUE else f"{value[:_SHORT_VALUE]}…{_digest(value)}"


async def add_to_counters(
    connection: AsyncConnection, increments: Mapping[CounterKey, float], now: datetime
) -> None:
    """Add each increment to its counter, creating missing ones, in one statement."""
    rows = [
        {"name": name, "labels": labels, "value": float(value), "updated_at": now}
        for (name, labels), value in sorted(increments.items())
    ]
    await upsert_adding(
        connection,
        metric_counters,
        rows,
        conflict=("name", "labels"),
        add=("value",),
        replace=("updated_at",),
    )


async def read_counters(
    connection: AsyncConnection, name_prefix: str | None = None
) -> list[Counter]:
    """Every counter (whose name starts with `name_prefix`), by name then labels."""
    table = metric_counters
    query = select(table.c.name, table.c.labels, table.c.value)
    if name_prefix is not None:
        query = query.where(table.c.name.startswith(name_prefix, autoescape=True))
    rows = await connection.execute(query.order_by(table.c.name, table.c.labels))
    return [Counter(row.name, json.loads(row.labels), float(row.value)) for row in rows]


# --- histograms -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistogramSpec:
    """A Prometheus histogram kept as counters: cumulative buckets, sum and count."""

    name: str
    buckets: tuple[float, ...]
    """Upper bounds; `+Inf` follows."""

    def observe(self, add: Callable[[str, Mapping[str, str], float], None], value: float) -> None:
        value = max(0.0, value)  # a clock running ahead of another counts as no time
        for bound in self.buckets:
            if value <= bound:
                add(f"{self.name}_bucket", {"le": _bound(bound)}, 1)
        add(f"{self.name}_bucket", {"le": INF}, 1)
        add(f"{self.name}_sum", {}, value)
        add(f"{self.name}_count", {}, 1)

    def read(self, counters: Iterable[Counter]) -> Histogram:
        """The histogram from its counters; a bucket never reached is 0."""
        by_le: dict[str, float] = {}
        total = count = 0.0
        for counter in counters:
            if counter.name == f"{self.name}_bucket":
                by_le[counter.labels.get("le", "")] = counter.value
            elif counter.name == f"{self.name}_sum":
                total = counter.value
            elif counter.name == f"{self.name}_count":
                count = counter.value
        bounds = [*(_bound(bound) for bound in self.buckets), INF]
        return Histogram([(le, by_le.get(le, 0.0)) for le in bounds], total, count)


@dataclass(frozen=True, slots=True)
class Histogram:
    buckets: list[tuple[str, float]]
    """Cumulative (upper bound, count), `+Inf` last, as Prometheus wants them."""
    sum: float
    count: float


def _bound(bound: float) -> str:
    return f"{bound:g}"


class Increments:
    """Counter increments collected before one `add_to_counters` call."""

    def __init__(self) -> None:
        self.values: dict[CounterKey, float] = {}

    def add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        key = (name, labels_key(labels))
        self.values[key] = self.values.get(key, 0.0) + value


# --- event ingress -------------------------------------------------------------------------

INGRESS_LAG_HISTOGRAM = HistogramSpec(INGRESS_LAG, INGRESS_LAG_BUCKETS_MS)


def ingress_increments(samples: Iterable[tuple[str, float]]) -> dict[CounterKey, float]:
    """Counter increments for admitted events given as (source, lag ms).

    Per source: `apphub_events_ingested_total{source}`. For all: the cumulative buckets, sum
    and count of the `apphub_event_ingress_lag_ms` histogram (a negative lag, from a
    publisher's clock running ahead, counts as 0).
    """
    increments = Increments()
    for source, lag_ms in samples:
        increments.add(EVENTS_INGESTED, {"source": source}, 1)
        INGRESS_LAG_HISTOGRAM.observe(increments.add, lag_ms)
    return increments.values


async def record_ingested(
    connection: AsyncConnection, samples: Sequence[tuple[str, float]], now: datetime
) -> None:
    """Count admitted events, given as (source, lag ms), in the caller's transaction."""
    if samples:
        await add_to_counters(connection, ingress_increments(samples), now)


def ingress_lag_histogram(counters: Iterable[Counter]) -> Histogram:
    return INGRESS_LAG_HISTOGRAM.read(counters)


def ingested_by_source(counters: Iterable[Counter]) -> dict[str, float]:
    return {
        counter.labels.get("source", ""): counter.value
        for counter in counters
        if counter.name == EVENTS_INGESTED
    }


# --- the asset materializer ------------------------------------------------------------------

MATERIALIZER_DECISIONS = "apphub_materializer_decisions_total"
REACTION_HISTOGRAM = HistogramSpec(
    "apphub_materializer_reaction_ms", (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)
)
"""From an upstream production to the auto run created for it."""


async def record_decisions(
    connection: AsyncConnection,
    decisions: Sequence[tuple[str, str]],
    reactions_ms: Sequence[float],
    now: datetime,
) -> None:
    """Count decisions as (outcome, reason), and launch latencies, in the caller's transaction."""
    increments = Increments()
    for outcome, reason in decisions:
        increments.add(MATERIALIZER_DECISIONS, {"outcome": outcome, "reason": reason}, 1)
    for reaction in reactions_ms:
        REACTION_HISTOGRAM.observe(increments.add, reaction)
    if increments.values:
        await add_to_counters(connection, increments.values, now)


def decisions_by_outcome(counters: Iterable[Counter]) -> list[tuple[str, str, float]]:
    return sorted(
        (c.labels.get("outcome", ""), c.labels.get("reason", ""), c.value)
        for c in counters
        if c.name == MATERIALIZER_DECISIONS
    )


# --- event triggers ----------------------------------------------------------------------------

TRIGGER_DELIVERIES = "apphub_event_trigger_deliveries_total"
TRIGGER_OUTCOMES: tuple[str, ...] = ("launched", "failed", "throttled", "skipped")


async def record_trigger_outcomes(
    connection: AsyncConnection, outcomes: Sequence[str], now: datetime
) -> None:
    """Count delivery outcomes (launched, failed, throttled, skipped) in the caller's
    transaction, so the figures are the cluster's however many trigger workers run."""
    increments = Increments()
    for outcome in outcomes:
        increments.add(TRIGGER_DELIVERIES, {"outcome": outcome}, 1)
    if increments.values:
        await add_to_counters(connection, increments.values, now)


def trigger_outcomes(counters: Iterable[Counter]) -> dict[str, float]:
    """Delivery outcomes so far; every outcome present (0 when there was none)."""
    found = dict.fromkeys(TRIGGER_OUTCOMES, 0.0)
    for counter in counters:
        if counter.name == TRIGGER_DELIVERIES:
            found[counter.labels.get("outcome", "")] = counter.value
    return found


# --- runs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSummary:
    total: int
    status_counts: dict[str, int]
    average_duration_ms: float | None
    """Over ended runs that recorded a duration; None when there is none."""
    failure_rate: float
    """Failed / ended (succeeded, failed, canceled, expired); 0 when none has ended."""

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "statusCounts": self.status_counts,
            "averageDurationMs": self.average_duration_ms,
            "failureRate": self.failure_rate,
        }


async def run_summary(
    connection: AsyncConnection, table: Table, statuses: Sequence[str]
) -> RunSummary:
    """Counts by status (every one of `statuses` present, 0 if none), mean duration, failure rate.

    For `job_runs` or `workflow_runs`; one grouped query.
    """
    rows = await connection.execute(
        select(
            table.c.status,
            func.count(),
            func.coalesce(func.sum(table.c.duration_ms), 0),
            func.count(table.c.duration_ms),
        ).group_by(table.c.status)
    )
    counts = dict.fromkeys(statuses, 0)
    duration_total = durations = 0
    for status, count, duration_sum, duration_count in rows:
        counts[str(status)] = int(count)
        if status in TERMINAL_RUN_STATUSES:
            duration_total += int(duration_sum)
            durations += int(duration_count)
    ended = sum(counts.get(status, 0) for status in TERMINAL_RUN_STATUSES)
    return RunSummary(
        total=sum(counts.values()),
        status_counts=counts,
        average_duration_ms=round(duration_total / durations, 1) if durations else None,
        failure_rate=round(counts.get("failed", 0) / ended, 4) if ended else 0.0,
    )


# --- retries and events --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backlog:
    """Durable retries waiting for their time: how many, how many are late, the next one."""

    count: int
    overdue: int
    next_due_at: datetime | None


async def retry_backlog(connection: AsyncConnection, now: datetime) -> dict[str, Backlog]:
    """Deferred events, workflow steps with a retry scheduled, standalone job runs to retry,
    throttled trigger deliveries."""
    events, steps, deliveries = workflow_events, workflow_run_steps, workflow_trigger_deliveries
    return {
        "events": await _backlog(
            connection, events.c.available_at, events.c.status == event_store.DEFERRED, now
        ),
        "workflowSteps": await _backlog(
            connection, steps.c.next_attempt_at, steps.c.retry_state == "scheduled", now
        ),
        "jobRuns": await _backlog(
            connection,
            job_runs.c.next_attempt_at,
            (job_runs.c.status == "pending")
            & job_runs.c.next_attempt_at.is_not(None)
            & job_runs.c.workflow_run_step_id.is_(None),
            now,
        ),
        "deliveries": await _backlog(
            connection, deliveries.c.next_attempt_at, deliveries.c.status == "throttled", now
        ),
    }


async def _backlog(
    connection: AsyncConnection,
    due: ColumnElement[datetime],
    where: ColumnElement[bool],
    now: datetime,
) -> Backlog:
    overdue = func.coalesce(func.sum(case((due < now, 1), else_=0)), 0)
    query = select(func.count(), overdue, func.min(due)).where(where)
    count, late, next_due_at = (await connection.execute(query)).one()
    return Backlog(int(count), int(late), next_due_at)


async def event_counts(connection: AsyncConnection) -> dict[str, int]:
    """Stored events by status; every status present (0 when there is none)."""
    counts = dict.fromkeys((event_store.RECEIVED, event_store.DEFERRED, event_store.PROCESSED), 0)
    return counts | await event_store.counts_by_status(connection)
