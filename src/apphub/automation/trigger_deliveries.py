"""Carrying out trigger decisions inside the caller's transaction: delivery rows, runs,
throttle timers, failure counts and pauses.

`deliver` decides events as they arrive; `retry` gives throttled deliveries their turn
again (a timer fired, a run of the trigger ended, or an operator forced it). Both lock the
triggers they decide about, so decisions about one trigger take turns across processes and
`maxConcurrency` holds however events interleave.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.automation.launch import insert_run
from apphub.domain.base import iso_ms
from apphub.domain.errors import DefinitionError
from apphub.domain.requests import WorkflowRunRequest
from apphub.domain.runs import WorkflowRun
from apphub.domain.trigger_predicates import Predicate, all_hold
from apphub.domain.trigger_rules import PauseRule, TriggerState, Verdict, after_failure, decide
from apphub.domain.trigger_templates import TemplateProblem
from apphub.domain.triggers import (
    TRIGGERED_BY,
    event_scope,
    idempotency_key,
    render_key,
    render_parameters,
    scope,
    trigger_scope,
)
from apphub.domain.workflows import WorkflowDefinition
from apphub.store import events as event_store
from apphub.store import handled as handled_store
from apphub.store import metrics as metric_store
from apphub.store import timers as timer_store
from apphub.store import triggers as trigger_store
from apphub.store import workflow_runs as run_store
from apphub.store import workflows as workflow_store
from apphub.store.rows import new_id
from apphub.store.tables import trigger_events

RETRY = "trigger.delivery"
"""The kind of the durable timer that gives a throttled delivery its next try."""
PAGE = 200
"""Throttled deliveries read at a time."""
REASONS = {
    "paused": "trigger paused after repeated failures",
    "duplicate": "idempotency key already seen within idempotencyTtlMs",
    "concurrency": "maxConcurrency runs of this trigger are pending or running",
    "window": "throttleCount launches within throttleWindowMs",
}


@dataclass
class Delivered:
    """What one transaction did, to announce after its commit."""

    runs: list[WorkflowRun] = field(default_factory=list)
    timers: list[datetime] = field(default_factory=list)
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)
    """(trigger id, delivery status, event id), for logs and counters."""


class _Decider:
    """Decisions of one transaction: trigger rows (locked), their state, workflows read once."""

    def __init__(self, connection: AsyncConnection, rule: PauseRule, now: datetime) -> None:
        self.connection, self.rule, self.now = connection, rule, now
        self.done = Delivered()
        self.workflows: dict[str, WorkflowDefinition | None] = {}
        self.failures: dict[str, list[datetime]] = {}

    async def workflow(self, workflow_id: str) -> WorkflowDefinition | None:
        if workflow_id not in self.workflows:
            self.workflows[workflow_id] = await workflow_store.get_workflow_by_id(
                self.connection, workflow_id
            )
        return self.workflows[workflow_id]

    async def launch(
        self, trigger: Any, event: Any, delivery_id: str, key: str | None, state: TriggerState
    ) -> dict[str, Any]:
        """Create the run; the delivery's new values (launched, or failed with the reason)."""
        try:
            run = await self._insert(trigger, event, delivery_id, key)
        except (DefinitionError, TemplateProblem) as error:
            return await self.failed(trigger, state, str(error))
        except ValidationError as error:  # a rendered run key or partition key out of shape
            problem = error.errors()[0]
            field = ".".join(str(part) for part in problem["loc"])
            return await self.failed(trigger, state, f"{field}: {problem['msg']}")
        except run_store.RunKeyTakenError:
            return {"status": "skipped", "last_error": "run key already pending or running"}
        state.note_launch(self.now, key)
        self.done.runs.append(run)
        return {"status": "launched", "workflow_run_id": run.id, "launched_at": self.now}

    async def _insert(
        self, trigger: Any, event: Any, delivery_id: str, key: str | None
    ) -> WorkflowRun:
        workflow = await self.workflow(trigger.workflow_definition_id)
        if workflow is None:
            raise DefinitionError("the trigger's workflow no longer exists")
        context = scope(event_scope(event), trigger_scope(trigger), self.now)
        parameters = render_parameters(trigger.parameter_template, context)
        run_key = render_key(trigger.run_key_template, context | {"parameters": parameters})
        partition = parameters.get("partitionKey")
        request = WorkflowRunRequest.model_validate(
            {
                "parameters": parameters,
                "triggeredBy": TRIGGERED_BY,
                "trigger": _run_trigger(trigger, event, delivery_id, key),
                "partitionKey": partition if isinstance(partition, str) else None,
                "runKey": run_key,
            }
        )
        return await insert_run(self.connection, workflow, request)

    async def failed(self, trigger: Any, state: TriggerState, error: str) -> dict[str, Any]:
        """A failure counts towards the pause threshold; reaching it pauses the trigger."""
        recent = self.failures.get(trigger.id, trigger_store.recent_failures(trigger))
        kept, paused_until = after_failure(recent, self.now, self.rule)
        self.failures[trigger.id] = kept
        if paused_until is not None:
            state.paused_until = paused_until
        await trigger_store.set_pause_state(self.connection, trigger.id, state.paused_until, kept)
        return {"status": "failed", "last_error": error[:2000]}

    async def throttle(self, delivery_id: str, trigger_id: str, verdict: Verdict) -> None:
        assert verdict.retry_at is not None
        payload = {"deliveryId": delivery_id, "triggerId": trigger_id}
        await timer_store.schedule(
            self.connection, RETRY, delivery_id, verdict.retry_at, payload, self.now
        )
        self.done.timers.append(verdict.retry_at)


def _run_trigger(trigger: Any, event: Any, delivery_id: str, key: str | None) -> dict[str, Any]:
    """CONTRACT's `trigger` of a run an event trigger launched."""
    return {
        "type": "event",
        "event": {
            "id": event.id,
            "type": event.type,
            "source": event.source,
            "occurredAt": iso_ms(event.occurred_at),
            "correlationId": event.correlation_id,
        },
        "triggerId": trigger.id,
        "triggerName": trigger.name,
        "deliveryId": delivery_id,
        "dedupeKey": key,
    }


def _listens(trigger: Any, event: Any) -> bool:
    return bool(
        trigger.event_type == event.type
        and trigger.event_source in (None, event.source)
        and trigger.created_at <= event.received_at
    )


def _matches(trigger: Any, envelope: dict[str, Any]) -> bool | str:
    """Whether the trigger's predicates hold for the event, or why they could not be told.

    Evaluation is pure, so any error it raises (a stored predicate a newer rule refuses,
    event data an operator cannot take) belongs to this one (trigger, event) pair: it is
    returned, to fail that delivery, instead of aborting the transaction that decides every
    event batched with it (and every repair pass after).
    """
    try:
        predicates = [Predicate.model_validate(p) for p in trigger.predicates]
        return all_hold(predicates, envelope)
    except Exception as error:  # whatever it is, only this pair fails
        detail = " ".join(str(error).split())
        return f"predicates could not be evaluated: {type(error).__name__}: {detail}"


# --- events as they arrive -----------------------------------------------------------------


async def deliver(
    connection: AsyncConnection, events: Sequence[Any], rule: PauseRule, now: datetime
) -> Delivered:
    """Decide every (event, trigger) pair of these events, in event order."""
    decider = _Decider(connection, rule, now)
    if not events:
        return decider.done
    candidates = await trigger_store.candidates(connection, {event.type for event in events})
    pairs = [(e, t) for e in events for t in candidates if _listens(t, e)]
    listened = sorted({(e.id, e.type) for e, _ in pairs})
    fresh = await handled_store.mark_handled(connection, trigger_events, listened, now)
    envelopes = {e.id: event_scope(e) for e, _ in pairs}
    pairs = [
        (e, t)
        for e, t in pairs
        if e.id in fresh
        and (t.paused_until is not None or _matches(t, envelopes[e.id]) is not False)
    ]
    if not pairs:
        return decider.done
    locked = {
        row.id: row
        for row in await trigger_store.lock_triggers(connection, {t.id for _, t in pairs})
    }
    chosen: list[tuple[Any, Any, str | None, str | None]] = []
    keys: dict[str, set[str]] = {}
    for event, candidate in pairs:
        trigger = locked.get(candidate.id)
        # Read again under the lock: a change committed since the candidates were read
        # (disabled, another event type or source) is what decides.
        if trigger is None or trigger.status != "active" or not _listens(trigger, event):
            continue
        paused_now = trigger.paused_until is not None and trigger.paused_until > now
        matched = True if paused_now else _matches(trigger, envelopes[event.id])
        if matched is False:
            continue
        key, problem = _key(trigger, event, now) if matched is True else (None, matched)
        chosen.append((event, trigger, key, problem))
        if key is not None:
            keys.setdefault(trigger.id, set()).add(key)
    states = await trigger_store.states(connection, list(locked.values()), keys, now)
    rows = []
    for event, trigger, key, problem in chosen:
        state = states[trigger.id]
        rows.append(await _decide_new(decider, trigger, event, key, problem, state))
    await _record(decider, rows)
    return decider.done


def _key(trigger: Any, event: Any, now: datetime) -> tuple[str | None, str | None]:
    """The event's idempotency key, or why not: a template that fails to render fails the
    delivery."""
    try:
        context = scope(event_scope(event), trigger_scope(trigger), now)
        return idempotency_key(trigger, context), None
    except TemplateProblem as problem:
        return None, f"idempotencyKeyExpression: {problem}"


async def _decide_new(
    decider: _Decider,
    trigger: Any,
    event: Any,
    key: str | None,
    problem: str | None,
    state: TriggerState,
) -> dict[str, Any]:
    """The new delivery's row; `problem` (predicates or key that could not be evaluated)
    fails it."""
    now = decider.now
    delivery_id = new_id()
    row: dict[str, Any] = {
        "id": delivery_id,
        "trigger_id": trigger.id,
        "event_id": event.id,
        "status": "matched",
        "attempts": 1,
        "last_error": None,
        "workflow_run_id": None,
        "dedupe_key": key,
        "next_attempt_at": None,
        "launched_at": None,
        "created_at": now,
        "updated_at": now,
    }
    if problem is not None:
        return row | await decider.failed(trigger, state, problem)
    verdict = decide(trigger_store.limits_of(trigger), state, key, now, rand=random.random())
    if verdict.outcome == "skipped":
        return row | {"status": "skipped", "last_error": REASONS[verdict.reason]}
    if verdict.outcome == "throttled":
        state.note_waiting(now, key)
        await decider.throttle(delivery_id, trigger.id, verdict)
        return row | {
            "status": "throttled",
            "last_error": REASONS[verdict.reason],
            "next_attempt_at": verdict.retry_at,
        }
    return row | await decider.launch(trigger, event, delivery_id, key, state)


async def _record(decider: _Decider, rows: list[dict[str, Any]]) -> None:
    """Write the deliveries and count their outcomes (after the runs: a failed insert of a run
    is a failed delivery, not a lost one)."""
    await trigger_store.insert_deliveries(decider.connection, rows)
    for row in rows:
        decider.done.outcomes.append((row["trigger_id"], row["status"], row["event_id"]))
    await metric_store.record_trigger_outcomes(
        decider.connection, [row["status"] for row in rows], decider.now
    )


# --- throttled deliveries, again -------------------------------------------------------------


async def retry(
    connection: AsyncConnection,
    trigger_id: str,
    rule: PauseRule,
    now: datetime,
    *,
    due_only: bool,
) -> Delivered:
    """Give a trigger's throttled deliveries their turn, oldest first.

    `due_only`: a timer fired, so deliveries whose time came are tried (one still throttled
    backs off further); every due one is read, page after page, since each delivery's timer
    fires once and one left unread would wait for good. Otherwise a run ended: as many as
    now fit (from the oldest page) are launched, the others keep their place and time.
    """
    decider = _Decider(connection, rule, now)
    locked = await trigger_store.lock_triggers(connection, [trigger_id])
    due_by = now if due_only else None
    page = await trigger_store.throttled(connection, trigger_id, PAGE, due_by=due_by)
    if not locked or not page:
        return decider.done
    trigger = locked[0]
    state = (await trigger_store.states(connection, [trigger], {}, now))[trigger.id]
    while True:
        await _retry_page(decider, trigger, state, page, forced=False, due_only=due_only)
        if not due_only or len(page) < PAGE:
            return decider.done
        page = await trigger_store.throttled(
            connection, trigger_id, PAGE, due_by=due_by, after=page[-1]
        )


async def force(
    connection: AsyncConnection, trigger_id: str, delivery_id: str, rule: PauseRule, now: datetime
) -> Delivered | None:
    """An operator launches one throttled delivery now, whatever the limits say.

    The delivery is read after its trigger is locked, wherever it stands in the queue; None
    when it is no longer throttled (a retry or a cancel got to it first).
    """
    decider = _Decider(connection, rule, now)
    locked = await trigger_store.lock_triggers(connection, [trigger_id])
    delivery = await trigger_store.get_delivery(connection, delivery_id)
    if not locked or delivery is None or delivery.status != trigger_store.THROTTLED:
        return None
    trigger = locked[0]
    state = (await trigger_store.states(connection, [trigger], {}, now))[trigger.id]
    await _retry_page(decider, trigger, state, [delivery], forced=True, due_only=True)
    return decider.done


async def _retry_page(
    decider: _Decider,
    trigger: Any,
    state: TriggerState,
    waiting: Sequence[Any],
    *,
    forced: bool,
    due_only: bool,
) -> None:
    """Try these throttled deliveries in order; record what changed."""
    connection, now = decider.connection, decider.now
    events = {e.id: e for e in await event_store.by_ids(connection, [d.event_id for d in waiting])}
    outcomes: list[str] = []
    for delivery in waiting:
        event = events.get(delivery.event_id)
        values = await _retry_one(decider, trigger, event, delivery, state, forced, due_only)
        if not values:
            continue
        await trigger_store.update_delivery(connection, delivery.id, values | {"updated_at": now})
        if values.get("status") not in (None, "throttled"):
            await timer_store.cancel(connection, RETRY, delivery.id)
            outcomes.append(values["status"])
            decider.done.outcomes.append((trigger.id, values["status"], delivery.event_id))
    await metric_store.record_trigger_outcomes(connection, outcomes, now)


async def _retry_one(
    decider: _Decider,
    trigger: Any,
    event: Any,
    delivery: Any,
    state: TriggerState,
    forced: bool,
    due_only: bool,
) -> dict[str, Any] | None:
    """A throttled delivery's new values; None when nothing changes."""
    if trigger.status != "active":
        return {"status": "skipped", "last_error": "trigger disabled", "next_attempt_at": None}
    if event is None:
        return {"status": "failed", "last_error": "the event is no longer stored"}
    attempts = delivery.attempts + 1
    verdict = (
        Verdict("launch", "forced")
        if forced
        else decide(
            trigger_store.limits_of(trigger),
            state,
            delivery.dedupe_key,
            decider.now,
            attempts=attempts,
            rand=random.random(),
            retry=True,
        )
    )
    if verdict.outcome == "throttled":
        if not due_only:
            return None
        await decider.throttle(delivery.id, trigger.id, verdict)
        return {"attempts": attempts, "next_attempt_at": verdict.retry_at}
    launched = await decider.launch(trigger, event, delivery.id, delivery.dedupe_key, state)
    return launched | {"attempts": attempts, "next_attempt_at": None}


async def cancel_delivery(connection: AsyncConnection, delivery_id: str, now: datetime) -> bool:
    """An operator gives up a throttled delivery: recorded as skipped, its timer removed.
    False (and nothing changed) when it is no longer throttled: a retry that launched it
    first keeps its launch."""
    values = {
        "status": "skipped",
        "last_error": "retry canceled by an operator",
        "next_attempt_at": None,
        "updated_at": now,
    }
    if not await trigger_store.update_throttled(connection, delivery_id, values):
        return False
    await timer_store.cancel(connection, RETRY, delivery_id)
    return True
