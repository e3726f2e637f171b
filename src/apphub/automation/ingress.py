"""Event ingress: store each event once by id, then process it where it was stored.

Processing = per-source rate limits (a paused source's events are deferred, durably, to the
end of the pause), live frames (`workflow.event.received` and the event's own type), and a
hand-off to every subscriber's queue (triggers, the materializer). The hand-off happens
before the event is marked processed, so a crash in between repeats it rather than loses it;
subscribers are idempotent by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.bus.frames import FramePublisher, frame
from apphub.domain.base import iso_ms, utc_now
from apphub.domain.events import EventEnvelope, derived_of, links_of, severity_of
from apphub.domain.ratelimits import RateLimiter
from apphub.queue import JobQueue
from apphub.store import events as event_store
from apphub.store import metrics as metric_store
from apphub.store.database import Database

log = structlog.get_logger(__name__)

INTERNAL_SOURCE_PREFIX = "apphub."
"""Events apphub raises itself are never rate limited."""
RESERVED_FRAME_PREFIXES = (
    "workflow.run.",
    "job.run.",
    "workflow.definition.",
    "workflow.event.",
    "connection.",
)
"""Event types that would pass for the engine's own frames get only `workflow.event.received`."""
BATCH = 500
ACK_DELAY_S = 0.05
"""How long handed-off events wait to be marked processed together."""


@dataclass(frozen=True)
class EventSubscriber:
    """A consumer of events (triggers, the materializer): a queue fed with event ids."""

    name: str
    queue: JobQueue
    wants: Callable[[str], bool]


@dataclass
class SourceStats:
    ingested: int = 0
    deferred: int = 0
    lag_total_ms: float = 0.0
    lag_latest_ms: float = 0.0
    lag_max_ms: float = 0.0

    def observe(self, lag_ms: float) -> None:
        self.ingested += 1
        self.lag_total_ms += lag_ms
        self.lag_latest_ms = lag_ms
        self.lag_max_ms = max(self.lag_max_ms, lag_ms)

    def as_json(self) -> dict[str, Any]:
        average = self.lag_total_ms / self.ingested if self.ingested else 0.0
        return {
            "ingested": self.ingested,
            "throttled": self.deferred,
            "dropped": 0,
            "lagMs": {
                "avg": round(average, 1),
                "latest": round(self.lag_latest_ms, 1),
                "max": round(self.lag_max_ms, 1),
            },
        }


def event_row(envelope: EventEnvelope, received_at: datetime) -> dict[str, Any]:
    return {
        "id": envelope.id,
        "type": envelope.type,
        "source": envelope.source,
        "occurred_at": envelope.occurred_at,
        "received_at": received_at,
        "payload": envelope.payload,
        "correlation_id": envelope.correlation_id,
        "ttl_ms": envelope.ttl,
        "metadata": envelope.metadata,
        "severity": severity_of(envelope.type, envelope.payload, envelope.metadata),
        "status": event_store.RECEIVED,
        "available_at": None,
    }


async def store_events(
    connection: AsyncConnection, envelopes: Sequence[EventEnvelope], now: datetime
) -> list[Any]:
    """Store events in the caller's transaction, with the change they report; the caller
    hands the rows to `EventIngress.process_soon` after the commit (a crash in between is
    repaired: unprocessed rows are processed by the ingress loop)."""
    return await event_store.insert_events(connection, [event_row(e, now) for e in envelopes])


def event_view(row: Any) -> dict[str, Any]:
    """A stored event as the API and `/ws` show it."""
    return {
        "id": row.id,
        "type": row.type,
        "source": row.source,
        "occurredAt": iso_ms(row.occurred_at),
        "receivedAt": iso_ms(row.received_at),
        "payload": row.payload,
        "correlationId": row.correlation_id,
        "ttl": row.ttl_ms,
        "metadata": row.metadata,
        "severity": row.severity,
        "links": links_of(row.payload, row.metadata),
        "derived": derived_of(row.type, row.payload),
    }


def event_frames(row: Any) -> list[dict[str, Any]]:
    view = event_view(row)
    frames = [frame("workflow.event.received", view) | {"seq": row.seq}]
    if not row.type.startswith(RESERVED_FRAME_PREFIXES):
        frames.append(frame(row.type, view) | {"seq": row.seq})
    return frames


@dataclass
class EventIngress:
    database: Database
    frames: FramePublisher
    limiter: RateLimiter
    subscribers: list[EventSubscriber] = field(default_factory=list)
    stats: dict[str, SourceStats] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _acks: list[Any] = field(default_factory=list)
    _ack_flush: asyncio.Task[None] | None = None
    _deferred_wake: asyncio.TimerHandle | None = None

    async def ingest(
        self, envelopes: Sequence[EventEnvelope], *, acknowledge_now: bool = False
    ) -> list[Any]:
        """Store new events (a replayed id is stored and processed once) and process them."""
        now = utc_now()
        rows = [event_row(envelope, now) for envelope in envelopes]
        async with self.database.write() as connection:
            stored = await event_store.insert_events(connection, rows)
        await self.process(stored, acknowledge_now=acknowledge_now)
        return stored

    def process_soon(self, rows: Sequence[Any]) -> None:
        """Process events another transaction stored, off the caller's path."""
        if rows:
            self._spawn(self.process(list(rows)))

    async def process(
        self, rows: Sequence[Any], *, acknowledge_now: bool = False, forced: bool = False
    ) -> None:
        """Rate-limit, frame and hand off; the `processed` mark follows in a shared batch.

        `forced` (an operator's retry): no rate limit applies.

        Marking later is safe: an event still `received` when its process dies is processed
        again by the repair loop, and subscribers are idempotent by event id.
        """
        now = utc_now()
        admitted, deferred = (list(rows), {}) if forced else self._admit(rows, now)
        for until, seqs in deferred.items():
            async with self.database.write() as connection:
                await event_store.mark(connection, seqs, event_store.DEFERRED, until)
            self._wake_at(until)
        if not admitted:
            return
        for row in admitted:
            self.frames.publish(event_frames(row))
        for subscriber in self.subscribers:
            for row in admitted:
                if subscriber.wants(row.type):
                    await subscriber.queue.enqueue(row.id)
        self._acks.extend(admitted)
        if acknowledge_now:
            await self.flush_acknowledgements()
        elif self._ack_flush is None or self._ack_flush.done():
            self._ack_flush = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(ACK_DELAY_S)
        await self.flush_acknowledgements()

    async def flush_acknowledgements(self) -> None:
        """Mark handed-off events processed and count them, in one transaction."""
        while self._acks:
            batch, self._acks = self._acks, []
            async with self.database.write() as connection:
                await event_store.mark(
                    connection, [row.seq for row in batch], event_store.PROCESSED, None
                )
                # Shared counters in the same transaction: counted once, the same everywhere.
                lags = [
                    (row.source, (row.received_at - row.occurred_at).total_seconds() * 1000)
                    for row in batch
                ]
                await metric_store.record_ingested(connection, lags, utc_now())

    def _admit(
        self, rows: Sequence[Any], now: datetime
    ) -> tuple[list[Any], dict[datetime, list[int]]]:
        admitted: list[Any] = []
        deferred: dict[datetime, list[int]] = {}
        for row in rows:
            stats = self.stats.setdefault(row.source, SourceStats())
            until = None
            if not row.source.startswith(INTERNAL_SOURCE_PREFIX):
                until = self.limiter.admit(row.source, now)
            if until is None:
                admitted.append(row)
                stats.observe((row.received_at - row.occurred_at).total_seconds() * 1000)
            else:
                deferred.setdefault(until, []).append(row.seq)
                stats.deferred += 1
        return admitted, deferred

    # --- deferred events and repair ---------------------------------------------------------

    async def process_due_deferred(self) -> int:
        """Process deferred events whose pause is over (they may be deferred again)."""
        total = 0
        while True:
            async with self.database.write() as connection:
                rows = await event_store.claim_deferred_due(connection, utc_now(), BATCH)
            if not rows:
                break
            await self.process(rows)
            total += len(rows)
        async with self.database.read() as connection:
            upcoming = await event_store.next_deferred(connection)
        if upcoming is not None:
            self._wake_at(upcoming)
        return total

    async def recover_unprocessed(self, older_than_s: float = 30.0) -> int:
        """Events stored whose processing never finished (a crash): process them now."""
        now = utc_now()
        before = now - timedelta(seconds=older_than_s)
        async with self.database.write() as connection:
            rows = await event_store.claim_unprocessed(connection, before, now, BATCH)
        await self.process(rows)
        return len(rows)

    async def prune(self, retention_days: int) -> int:
        """Drop events received longer ago than the retention; returns how many."""
        cut_off = utc_now() - timedelta(days=retention_days)
        total = 0
        while True:
            async with self.database.write() as connection:
                removed = await event_store.prune(connection, cut_off, 5000)
            total += removed
            if removed < 5000:
                return total

    def _wake_at(self, moment: datetime) -> None:
        """An in-process timer for the earliest deferred event (the rows stay the truth)."""
        delay = max(0.0, (moment - utc_now()).total_seconds()) + 0.01
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if self._deferred_wake is not None and self._deferred_wake.when() <= due:
            return
        if self._deferred_wake is not None:
            self._deferred_wake.cancel()
        self._deferred_wake = loop.call_at(due, self._fire_deferred)

    def _fire_deferred(self) -> None:
        self._deferred_wake = None
        self._spawn(self._run_deferred())

    async def _run_deferred(self) -> None:
        await self.process_due_deferred()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event processing failed", error=repr(task.exception()))

    async def close(self) -> None:
        if self._deferred_wake is not None:
            self._deferred_wake.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        if self._ack_flush is not None:
            with contextlib.suppress(Exception):
                await self._ack_flush
        await self.flush_acknowledgements()

    def health(self) -> dict[str, Any]:
        now = utc_now()
        return {
            "sources": {source: stats.as_json() for source, stats in sorted(self.stats.items())},
            "pausedSources": [
                {"source": source, "until": iso_ms(until)}
                for source, until in sorted(self.limiter.paused(now).items())
            ],
            "rateLimits": [rule.as_json() for rule in self.limiter.rules],
        }
