"""The end of an auto run, and the end of a cooldown: claims released, failures counted,
owed work kept and then decided again.

Functions of the caller's transaction: they return the decisions to record (with their
causes) and the cooldown to wake up for; the materializer records and announces them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.automation.auto_runs import Cause, Planned, cause_of_pending
from apphub.domain.asset_graph import Policy
from apphub.domain.materialize import (
    FOLLOW_UP,
    Backoff,
    Completion,
    Pending,
    decide_after_cooldown,
    decision,
    merge_pending,
    on_run_completed,
)
from apphub.store import assets as asset_store
from apphub.store import materializer as mat_store
from apphub.store import timers as timer_store

COOLDOWN = "materializer.cooldown"
"""The kind of the durable timer that ends a cooldown."""


async def settle_run(
    connection: AsyncConnection,
    policies: dict[str, Policy],
    backoff: Backoff,
    claim: Any,
    run: Any,
    event: tuple[str, str],
    now: datetime,
) -> tuple[datetime | None, Planned | None]:
    """The completion rules applied to a released claim's (workflow, partition): the cooldown
    to wake up for, and the follow-up decision to record under `event` (id, type), if any."""
    workflow_id, partition = claim.workflow_definition_id, claim.partition_key
    previous = await mat_store.cooldown(connection, workflow_id, partition, lock=True)
    completion = on_run_completed(
        run.status,
        previous.failures if previous is not None else 0,
        claim.follow_up_at,
        run.started_at,
        now,
        backoff,
    )
    kept = None
    if completion.cooldown_until is not None:  # a failure: the run's own work is owed
        current = Pending.from_json(previous.pending) if previous and previous.pending else None
        kept = merge_pending(current, Pending.from_json(claim.cause)).as_json()
    await mat_store.set_cooldown(
        connection,
        workflow_id,
        partition,
        failures=completion.failures,
        until=completion.cooldown_until or (previous.next_eligible_at if previous else None),
        pending=kept,
        now=now,
    )
    if completion.cooldown_until is not None:
        await timer_store.schedule(
            connection,
            COOLDOWN,
            f"{workflow_id}:{partition}",
            completion.cooldown_until,
            {"workflowId": workflow_id, "partitionKey": partition},
            now,
        )
    follow_up = _follow_up(policies.get(workflow_id), claim, completion, event)
    return completion.cooldown_until, follow_up


def _follow_up(
    policy: Policy | None, claim: Any, completion: Completion, event: tuple[str, str]
) -> Planned | None:
    """What becomes of the follow-up a claim owes: launched, kept for the cooldown's end,
    or dropped with its run's cancel."""
    if policy is None or claim.follow_up_at is None:
        return None
    follow = claim.follow_up or {}
    cause = Cause(
        event[0],
        event[1],
        FOLLOW_UP,
        asset_store.served_partition(claim.partition_key),
        claim.follow_up_at,
        upstream=follow.get("upstream") or None,
    )
    if completion.follow_up:
        return cause, decision(policy, "launched", FOLLOW_UP)
    if completion.follow_up_deferred:
        return cause, decision(policy, "deferred", "cooldown")
    if completion.follow_up_dropped:
        return cause, decision(policy, "skipped", "run-canceled")
    return None


def cooldown_event_id(workflow_id: str, partition: str, due_at: datetime) -> str:
    """The id the decisions of a cooldown's end are recorded under.

    The same for the same cooldown however often its timer fires (a redelivery records
    nothing new), and short whatever the partition key (a decision's event id holds 200
    characters; a key alone may have 200): a uuid5 of the three, after a readable prefix.
    """
    stamp = int(due_at.timestamp() * 1000)
    identity = f"{workflow_id}:{partition}:{stamp}"
    return f"cooldown:{uuid.uuid5(uuid.NAMESPACE_URL, identity)}"


async def cooldown_ended(
    connection: AsyncConnection,
    policies: dict[str, Policy],
    timer: Any,
    now: datetime,
) -> Planned | None:
    """A cooldown's timer fired: take the work it kept and decide it (if it is still owed)."""
    workflow_id, partition = timer.payload["workflowId"], timer.payload["partitionKey"]
    row = await mat_store.cooldown(connection, workflow_id, partition, lock=True)
    if row is None or not row.pending:
        return None
    if row.next_eligible_at is not None and row.next_eligible_at > now:
        return None  # a later failure moved the cooldown; its own timer comes then
    pending = Pending.from_json(row.pending)
    await mat_store.set_cooldown(
        connection,
        workflow_id,
        partition,
        failures=row.failures,
        until=row.next_eligible_at,
        pending=None,
        now=now,
    )
    states = await mat_store.workflow_states(connection, [workflow_id], partition)
    chosen = decide_after_cooldown(policies.get(workflow_id), pending, states[workflow_id], now)
    if chosen is None:
        return None
    cause = cause_of_pending(
        pending,
        cooldown_event_id(workflow_id, partition, timer.due_at),
        "materializer.cooldown-ended",
        asset_store.served_partition(partition),
    )
    return cause, chosen
