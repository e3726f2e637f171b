"""The asset materializer: keeps assets fresh, reacting to events within milliseconds.

It is handed event ids by the ingress (it never polls for them): `asset.produced` launches
stale consumers and sets the producer's freshness timers; `asset.expired` and `asset.stale`
run an asset's producer again; the end of one of its own runs (`workflow.run.*`) releases
the run's claim, sets or resets the cooldown and launches the one owed follow-up;
`workflow.definition.*` changes the asset graph. Per event it reads the few rows the pure
rules need, decides, and writes the decisions, claims and runs in one transaction (with a
row saying the event was handled); the runs are enqueued after the commit. Freshness expiry
and the end of a cooldown are durable timers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.automation.auto_runs import Applied, Cause, apply_decisions
from apphub.automation.batching import Batcher
from apphub.automation.completions import COOLDOWN, cooldown_ended, settle_run
from apphub.automation.freshness import (
    EXPIRY,
    SOURCE,
    UpstreamChange,
    expired_event,
    expiry_timers,
    upstream_change,
)
from apphub.automation.ingress import EventIngress
from apphub.automation.loops import every, with_database_retries
from apphub.automation.timers import TimerService
from apphub.bus import Broadcaster
from apphub.bus.frames import FramePublisher, frame
from apphub.domain.asset_graph import AssetGraph, build_graph
from apphub.domain.assets import asset_key
from apphub.domain.base import iso_ms, parse_iso, utc_now
from apphub.domain.materialize import (
    Backoff,
    RefreshReason,
    WorkflowState,
    decide_produced,
    decide_refresh,
)
from apphub.domain.runs import ACTIVE_RUN_STATUSES
from apphub.queue import JobQueue
from apphub.store import assets as asset_store
from apphub.store import events as event_store
from apphub.store import materializer as mat_store
from apphub.store import timers as timer_store
from apphub.store.database import Database

log = structlog.get_logger(__name__)

MATERIALIZER_QUEUE = "apphub_materializer_queue"
TIMER_QUEUE = "apphub_materializer_timer_queue"
GRAPH_CHANNEL = "materializer"
RETRY = "materializer.retry"
ORCHESTRATOR = "apphub.orchestrator"
REFRESHES: dict[str, RefreshReason] = {"asset.expired": "expiry", "asset.stale": "manual-stale"}
RUN_ENDS = tuple(f"workflow.run.{status}" for status in ("succeeded", "failed", "canceled"))
HANDLED = ("asset.produced", *REFRESHES, *RUN_ENDS)
"""Event types whose handling is recorded (and repaired when a hand-off was lost)."""
REGISTRY = "apphub.registry"
"""The source of `workflow.definition.*`: the registry, in the transaction of the change."""
TRUSTED_SOURCES = {
    "asset.produced": ORCHESTRATOR,
    "asset.expired": SOURCE,
    "asset.stale": "apphub.api",
    **dict.fromkeys(RUN_ENDS, ORCHESTRATOR),
}
"""Who raises each event the materializer acts on; the same type from elsewhere is ignored
(recorded as handled, no decision): only apphub's own productions and marks launch runs."""
DEFINITION_PREFIX = "workflow.definition."
FUTURE_SKEW = timedelta(days=1)
"""A production reported further ahead than this is logged: a job's clock or a bug."""
BATCH = 200
"""Events handled in one transaction at most (a burst shares it)."""
REPAIR_WINDOW = timedelta(hours=1)
REPAIR_GRACE = timedelta(seconds=10)
"""An event handed over less than this long ago may still be on its way: left alone."""


def wants(event_type: str) -> bool:
    """The events the ingress hands to the materializer's queue."""
    return event_type in HANDLED or event_type.startswith(DEFINITION_PREFIX)


def trusted_source(event_type: str) -> str | None:
    """Who may raise this event type for the materializer to act on it (None: anyone).

    Definition events decide which graph the materializer follows: any service may publish
    a `workflow.definition.*` over POST /events, so only the registry's are believed.
    """
    if event_type.startswith(DEFINITION_PREFIX):
        return REGISTRY
    return TRUSTED_SOURCES.get(event_type)


class Materializer:
    def __init__(
        self,
        database: Database,
        events: JobQueue,
        workflow_queue: JobQueue,
        ingress: EventIngress,
        frames: FramePublisher,
        broadcaster: Broadcaster,
        timers: TimerService,
        backoff: Backoff,
        *,
        refresh_interval_s: float = 600.0,
        repair_interval_s: float = 15.0,
        retention: timedelta = timedelta(days=30),
    ) -> None:
        self.database, self.events, self.workflow_queue = database, events, workflow_queue
        self.ingress, self.frames, self.broadcaster = ingress, frames, broadcaster
        self.timers, self.backoff = timers, backoff
        self.refresh_interval_s, self.repair_interval_s = refresh_interval_s, repair_interval_s
        self.retention = retention
        self.graph = AssetGraph()
        self.identity = uuid.uuid4().hex
        timers.on(EXPIRY, self._expire)
        timers.on(COOLDOWN, self._cooldown_over)
        timers.on(RETRY, self._retry_fired)
        self._batcher: Batcher[str] = Batcher(self._handle_batch)
        self._graph_lock = asyncio.Lock()

    async def run(self) -> None:
        await self.load_graph()
        await self.repair_once()
        concurrency = BATCH  # handlers only wait for their batch: this is the batch size
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_graph_changes())
            group.create_task(self.events.consume(self.handle, concurrency=concurrency))
            group.create_task(self.timers.run())
            group.create_task(
                every(self.repair_interval_s, self.repair_once, "materializer repair")
            )
            if self.refresh_interval_s > 0:
                group.create_task(every(self.refresh_interval_s, self.load_graph, "asset graph"))

    # --- the asset graph -----------------------------------------------------------------------

    async def load_graph(self) -> None:
        """Build the whole graph afresh. One graph change at a time: a workflow reloaded
        while this reads would otherwise be overwritten by the older snapshot."""
        started = time.perf_counter()
        async with self._graph_lock:
            async with self.database.read() as connection:
                declarations = await asset_store.graph_declarations(connection)
            self.graph = build_graph(declarations)
        log.info(
            "asset graph built",
            workflows=len(self.graph.policies),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def reload_workflow(self, workflow_id: str) -> None:
        async with self._graph_lock:
            async with self.database.read() as connection:
                declarations = await asset_store.graph_declarations(
                    connection, workflow_id=workflow_id
                )
            self.graph.replace_workflow(workflow_id, declarations)

    async def _follow_graph_changes(self) -> None:
        """Definition changes another materializer process handled (this one reloads too)."""
        async with self.broadcaster.subscribe(GRAPH_CHANNEL) as messages:
            async for message in messages:
                if message.get("from") != self.identity and message.get("workflowId"):
                    await self.reload_workflow(str(message["workflowId"]))

    # --- events ----------------------------------------------------------------------------

    async def handle(self, event_id: str) -> None:
        """One handed-over event; events handed over together are handled together."""
        await self._batcher.submit(event_id)

    async def _handle_batch(self, event_ids: Sequence[str]) -> None:
        """A database error is retried, then the events are left to a durable timer.

        Any other error is a malformed event's, and would fail the batch on every delivery
        and repair pass: the batch is handled again one event at a time, so the others'
        decisions are kept, and the one that still fails alone is given up.
        """
        step = partial(self.handle_now, event_ids)
        try:
            handled = await with_database_retries(step, "materializer events")
        except Exception as error:
            if len(event_ids) == 1:
                return await self._give_up(event_ids[0], error)
            log.warning(
                "materializer batch failed: handling its events one at a time",
                events=len(event_ids),
                error_type=type(error).__name__,
            )
            for event_id in event_ids:
                await self._handle_batch([event_id])
            return None
        if not handled:
            await self._retry_later(event_ids)
        return None

    async def _give_up(self, event_id: str, error: Exception) -> None:
        """An event that fails on its own is recorded as handled, with no decision: handling
        it again would fail again, and repair passes would retry it for an hour."""
        log.error(
            "materializer event failed: recorded as handled without a decision",
            event_id=event_id,
            error_type=type(error).__name__,
            error=str(error),
        )
        if not await with_database_retries(partial(self._mark_ids, [event_id]), "give up"):
            log.warning("failed event left to the repair loop", event_id=event_id)

    async def _mark_ids(self, event_ids: Sequence[str]) -> None:
        async with self.database.write() as connection:
            events = await event_store.by_ids(connection, event_ids)
            handled = [(event.id, event.type) for event in events]
            await mat_store.mark_handled(connection, handled, utc_now())

    async def _retry_fired(self, timer: Any) -> None:
        """A retry left to a timer: a database error fires it again; any other error is the
        event's own, and is given up as in a batch."""
        event_id = str(timer.payload["eventId"])
        try:
            await self.handle_now([event_id])
        except DBAPIError:
            raise
        except Exception as error:
            await self._give_up(event_id, error)

    async def handle_now(self, event_ids: Sequence[str]) -> None:
        """Handle these events in their order; runs of `asset.produced` share a transaction.

        The common case, only apphub's own productions, is read and decided in one
        transaction (the hot path of an upstream change).
        """
        async with self.database.write() as connection:
            events = await event_store.by_ids(connection, event_ids)
            fast = bool(events) and all(_production(event) for event in events)
            if fast:
                applied, timers = await self._decide_productions(connection, events)
        if fast:
            await self._announce(applied, timers)
            return
        produced: list[Any] = []
        for event in events:
            if event.source != (trusted_source(event.type) or event.source):
                log.warning("event ignored: not apphub's own", event_id=event.id, type=event.type)
                await self._mark_only(event)
                continue
            if event.type == "asset.produced":
                produced.append(event)
                continue
            if produced:
                await self._produced(produced)
                produced = []
            await self._handle_other(event)
        if produced:
            await self._produced(produced)

    async def _handle_other(self, event: Any) -> None:
        if event.type in REFRESHES:
            await self._refresh(event)
        elif event.type in RUN_ENDS:
            await self._run_ended(event.id, event.type, str(event.payload["workflowRunId"]))
        elif event.type.startswith(DEFINITION_PREFIX):
            await self._definition_changed(event)

    async def _retry_later(self, event_ids: Sequence[str]) -> None:
        due = utc_now() + timedelta(seconds=5)
        try:
            async with self.database.write() as connection:
                for event_id in event_ids:
                    payload = {"eventId": event_id}
                    await timer_store.schedule(connection, RETRY, event_id, due, payload, utc_now())
            await self.timers.wake(due)
        except DBAPIError:
            log.exception("events left to the repair loop", events=len(event_ids))

    async def _definition_changed(self, event: Any) -> None:
        """The registry's event of a definition change: reload that workflow's part of the
        graph here, and tell the other materializer processes to."""
        payload = event.payload
        workflow_id = payload.get("workflowDefinitionId") if isinstance(payload, dict) else None
        if not workflow_id or not isinstance(workflow_id, str):
            log.warning(
                "definition event without a workflowDefinitionId ignored", event_id=event.id
            )
            return
        await self.reload_workflow(workflow_id)
        message = {"type": "graph-changed", "workflowId": workflow_id, "from": self.identity}
        await self.broadcaster.publish(GRAPH_CHANNEL, message)

    async def _produced(self, events: Sequence[Any]) -> None:
        async with self.database.write() as connection:
            applied, timers = await self._decide_productions(connection, events)
        await self._announce(applied, timers)

    async def _decide_productions(
        self, connection: AsyncConnection, events: Sequence[Any]
    ) -> tuple[Applied, list[datetime]]:
        """Stale consumers are launched; the producers' freshness timers are (re)set."""
        now = utc_now()
        read = [(event, upstream_change(event)) for event in events]
        new = await mat_store.mark_handled(connection, [(e.id, e.type) for e in events], now)
        changes = [change for event, change in read if change and event.id in new]
        states = await self._states_for(connection, changes)
        decided = decide_produced(self.graph, [c.produced for c in changes], states, now)
        planned = [
            (c.cause, d) for c, decisions in zip(changes, decided, strict=True) for d in decisions
        ]
        applied = await apply_decisions(connection, planned, self.graph.policies, now)
        timers = expiry_timers(self.graph, changes)
        for timer_key, timer in timers.items():
            await timer_store.schedule(
                connection, EXPIRY, timer_key, timer.due, timer.payload, now, as_of=timer.as_of
            )
        for event, change in read:
            if change is None:
                log.warning("asset.produced without assetId/producedAt ignored", event_id=event.id)
            elif change.produced.produced_at > now + FUTURE_SKEW:
                log.warning(
                    "asset.produced in the future: its freshness may never expire",
                    event_id=event.id,
                    produced_at=iso_ms(change.produced.produced_at),
                )
        return applied, [timer.due for timer in timers.values()]

    async def _states_for(
        self, connection: AsyncConnection, changes: Sequence[UpstreamChange]
    ) -> dict[tuple[str, str], WorkflowState]:
        """The state of every consumer the changes concern, one query per partition."""
        consumers: dict[str, set[str]] = {}
        for change in changes:
            wanted = consumers.setdefault(change.produced.partition, set())
            wanted.update(p.workflow_id for p in self.graph.consumers_of(change.produced.asset_key))
        states: dict[tuple[str, str], WorkflowState] = {}
        for partition, workflow_ids in consumers.items():
            found = await mat_store.workflow_states(connection, sorted(workflow_ids), partition)
            states.update({(wid, partition): state for wid, state in found.items()})
        return states

    async def _refresh(self, event: Any) -> None:
        """`asset.expired` (a freshness timer) or `asset.stale` (an operator's mark)."""
        payload = event.payload
        reason = REFRESHES[event.type]
        try:
            key, producer_id = (
                asset_key(str(payload["assetId"])),
                str(payload["workflowDefinitionId"]),
            )
            expired_at = parse_iso(payload["producedAt"]) if reason == "expiry" else None
        except (KeyError, TypeError, ValueError):
            log.warning("refresh event without its fields ignored", event_id=event.id)
            return await self._mark_only(event)
        cause = Cause(
            event.id,
            event.type,
            reason,
            payload.get("partitionKey") or None,
            expired_at,
            asset_key=key,
            expiry_reason=payload.get("reason") if reason == "expiry" else None,
        )
        now = utc_now()
        async with self.database.write() as connection:
            if not await mat_store.mark_handled(connection, [(event.id, event.type)], now):
                return None
            states = await mat_store.workflow_states(connection, [producer_id], cause.partition)
            latest = await mat_store.latest_production(
                connection, producer_id, key, cause.partition
            )
            superseded = expired_at is not None and latest is not None and latest > expired_at
            chosen = decide_refresh(
                self.graph, key, producer_id, reason, superseded, states[producer_id], now
            )
            planned = [(cause, chosen)] if chosen is not None else []
            applied = await apply_decisions(connection, planned, self.graph.policies, now)
        await self._announce(applied)
        return None

    async def _mark_only(self, event: Any) -> None:
        async with self.database.write() as connection:
            await mat_store.mark_handled(connection, [(event.id, event.type)], utc_now())

    # --- the end of an auto run ----------------------------------------------------------------

    async def _run_ended(self, event_id: str, event_type: str, run_id: str) -> None:
        """Release the run's claim; cool down on failure; launch or keep the owed follow-up."""
        now = utc_now()
        applied, cooldown_until = Applied(), None
        async with self.database.write() as connection:
            if not await mat_store.mark_handled(connection, [(event_id, event_type)], now):
                return
            run = await mat_store.run_status(connection, run_id)
            if run is None or run.status in ACTIVE_RUN_STATUSES:
                return
            claim = await mat_store.release_claim_of_run(connection, run_id)
            if claim is None:
                return  # not one of ours (a missing-dependency run), or already released
            cooldown_until, follow_up = await settle_run(
                connection,
                self.graph.policies,
                self.backoff,
                claim,
                run,
                (event_id, event_type),
                now,
            )
            if follow_up is not None:
                applied = await apply_decisions(connection, [follow_up], self.graph.policies, now)
        await self._announce(applied, [cooldown_until] if cooldown_until else [])

    # --- timers -----------------------------------------------------------------------------

    async def _expire(self, timer: Any) -> None:
        """A freshness window ran out: publish `asset.expired`, unless a newer one exists."""
        payload = timer.payload
        key = asset_key(payload["assetId"])
        partition = asset_store.stored_partition(payload.get("partitionKey"))
        async with self.database.read() as connection:
            latest = await mat_store.latest_production(
                connection, payload["workflowDefinitionId"], key, partition
            )
        if latest is None or latest <= parse_iso(payload["producedAt"]):
            await self.ingress.ingest([expired_event(payload)])

    async def _cooldown_over(self, timer: Any) -> None:
        """A cooldown ended: decide the work it kept (if it is still owed)."""
        now = utc_now()
        applied = Applied()
        async with self.database.write() as connection:
            owed = await cooldown_ended(connection, self.graph.policies, timer, now)
            if owed is not None:
                applied = await apply_decisions(connection, [owed], self.graph.policies, now)
        await self._announce(applied)

    # --- after the commit ---------------------------------------------------------------------

    async def _announce(self, applied: Applied, timers: Sequence[datetime] = ()) -> None:
        """Enqueue the new runs (lowest priority first), send their frames, log, wake timers."""
        for run, priority in sorted(applied.launched, key=lambda item: item[1]):
            await self.workflow_queue.enqueue(run.id, priority=priority)
        if applied.launched:
            self.frames.publish(
                [
                    frame("workflow.run.pending", run.model_dump(mode="json"))
                    for run, _ in applied.launched
                ]
            )
        for chosen, cause, run_id in applied.recorded:
            emit = log.info if chosen.launches else log.debug
            emit(
                "auto-materialize launch" if chosen.launches else "auto-materialize decision",
                event_id=cause.event_id,
                event_type=cause.event_type,
                workflow=chosen.workflow_slug,
                partition=cause.partition_key,
                outcome=chosen.outcome,
                reason=chosen.reason,
                run_id=run_id,
            )
        for due in timers:
            await self.timers.wake(due)

    # --- repair ---------------------------------------------------------------------------

    async def repair_once(self) -> int:
        """What a lost hand-off or a crash left: claims of ended runs, unhandled events."""
        async with self.database.read() as connection:
            orphans = await mat_store.orphaned_claims(connection, 100)
        for run_id in orphans:
            await self._run_ended(f"run-ended:{run_id}", "workflow.run.ended", run_id)
        now = utc_now()
        async with self.database.read() as connection:
            missed = await mat_store.unhandled_events(
                connection, HANDLED, (), (now - REPAIR_WINDOW, now - REPAIR_GRACE), 500
            )
        if missed:
            await self._handle_batch(missed)
        async with self.database.write() as connection:
            await mat_store.prune_handled(connection, now - self.retention)
        if orphans or missed:
            log.info("materializer repaired", claims=len(orphans), events=len(missed))
        return len(orphans) + len(missed)


def _production(event: Any) -> bool:
    """apphub's own `asset.produced`: the event the hot path is made for."""
    return bool(event.type == "asset.produced" and event.source == ORCHESTRATOR)
