"""Event triggers and their deliveries; the counts the trigger rules read.

The decision path reads the candidate triggers in one statement, locks those whose
predicates held (in id order, so concurrent workers cannot deadlock), and reads their
throttle, concurrency and idempotency state in three more, however many events are decided.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from apphub.domain.base import parse_iso
from apphub.domain.runs import ACTIVE_RUN_STATUSES
from apphub.domain.trigger_rules import Limits, TriggerState
from apphub.store.dialect import insert_new_returning
from apphub.store.events import PROCESSED
from apphub.store.tables import trigger_events as handled
from apphub.store.tables import workflow_definitions, workflow_events, workflow_runs
from apphub.store.tables import workflow_event_triggers as triggers
from apphub.store.tables import workflow_trigger_deliveries as deliveries

LAUNCHED = "launched"
THROTTLED = "throttled"
WAITING = ("matched", LAUNCHED, THROTTLED)
"""Deliveries whose idempotency key counts as seen (a failed or skipped one does not)."""


def _query() -> Select[Any]:
    return select(triggers, workflow_definitions.c.slug.label("workflow_slug")).join(
        workflow_definitions, workflow_definitions.c.id == triggers.c.workflow_definition_id
    )


def limits_of(row: Any) -> Limits:
    return Limits(
        row.throttle_window_ms, row.throttle_count, row.max_concurrency, row.idempotency_ttl_ms
    )


# --- definitions ---------------------------------------------------------------------------


async def insert_trigger(connection: AsyncConnection, values: dict[str, Any]) -> None:
    await connection.execute(insert(triggers).values(values))


async def update_trigger(
    connection: AsyncConnection, trigger_id: str, values: dict[str, Any]
) -> None:
    await connection.execute(update(triggers).where(triggers.c.id == trigger_id).values(values))


async def delete_trigger(connection: AsyncConnection, workflow_id: str, trigger_id: str) -> bool:
    result = await connection.execute(
        delete(triggers).where(
            triggers.c.id == trigger_id, triggers.c.workflow_definition_id == workflow_id
        )
    )
    return result.rowcount == 1


async def get_trigger(
    connection: AsyncConnection, workflow_id: str, trigger_id: str, *, lock: bool = False
) -> Any:
    query = _query().where(
        triggers.c.id == trigger_id, triggers.c.workflow_definition_id == workflow_id
    )
    if lock:
        query = query.with_for_update(of=triggers)
    return (await connection.execute(query)).first()


async def list_triggers(connection: AsyncConnection, workflow_id: str) -> list[Any]:
    query = _query().where(triggers.c.workflow_definition_id == workflow_id)
    return list(await connection.execute(query.order_by(triggers.c.created_at, triggers.c.id)))


async def candidates(connection: AsyncConnection, event_types: Iterable[str]) -> list[Any]:
    """Active triggers listening to any of these event types (sources are checked by caller)."""
    query = _query().where(triggers.c.event_type.in_(sorted(set(event_types))))
    return list(await connection.execute(query.where(triggers.c.status == "active")))


async def lock_triggers(connection: AsyncConnection, trigger_ids: Iterable[str]) -> list[Any]:
    """Lock and re-read triggers (in id order); decisions about one trigger take turns."""
    query = _query().where(triggers.c.id.in_(sorted(set(trigger_ids))))
    query = query.order_by(triggers.c.id).with_for_update(of=triggers)
    return list(await connection.execute(query))


async def set_pause_state(
    connection: AsyncConnection,
    trigger_id: str,
    paused_until: datetime | None,
    recent_failures: list[datetime],
) -> None:
    failures = [moment.isoformat() for moment in recent_failures]
    await connection.execute(
        update(triggers)
        .where(triggers.c.id == trigger_id)
        .values(paused_until=paused_until, recent_failures=failures)
    )


def recent_failures(row: Any) -> list[datetime]:
    return [parse_iso(moment) for moment in row.recent_failures or []]


async def paused_triggers(connection: AsyncConnection, now: datetime) -> list[Any]:
    query = _query().where(triggers.c.paused_until > now).order_by(triggers.c.paused_until)
    return list(await connection.execute(query))


# --- the state the rules read --------------------------------------------------------------


async def states(
    connection: AsyncConnection, rows: Sequence[Any], keys: dict[str, set[str]], now: datetime
) -> dict[str, TriggerState]:
    """Pause, launches in the throttle window, active runs and seen keys of each trigger."""
    found = {row.id: TriggerState(paused_until=row.paused_until) for row in rows}
    for row in rows:
        if row.throttle_window_ms and row.throttle_count:
            since = now - timedelta(milliseconds=row.throttle_window_ms)
            recent = await connection.execute(
                select(deliveries.c.launched_at)
                .where(deliveries.c.trigger_id == row.id, deliveries.c.launched_at > since)
                .order_by(deliveries.c.launched_at.desc())
                .limit(row.throttle_count)
            )
            found[row.id].launches = [moment for (moment,) in recent]
    limited = [row.id for row in rows if row.max_concurrency]
    if limited:
        for trigger_id, count in await _active_runs(connection, limited):
            found[trigger_id].active_runs = int(count)
    for trigger_id, key, first in await _seen(connection, rows, keys, now):
        seen = found[trigger_id].seen_keys
        seen[key] = min(first, seen.get(key, first))
    return found


async def _active_runs(connection: AsyncConnection, trigger_ids: list[str]) -> list[Any]:
    """Runs each trigger launched that are still pending or running (driven from the few
    active runs, not from every launch ever made)."""
    query = (
        select(deliveries.c.trigger_id, func.count())
        .join(workflow_runs, workflow_runs.c.id == deliveries.c.workflow_run_id)
        .where(
            workflow_runs.c.status.in_(ACTIVE_RUN_STATUSES),
            deliveries.c.trigger_id.in_(trigger_ids),
        )
        .group_by(deliveries.c.trigger_id)
    )
    return list(await connection.execute(query))


async def _seen(
    connection: AsyncConnection, rows: Sequence[Any], keys: dict[str, set[str]], now: datetime
) -> list[Any]:
    conditions = [
        and_(
            deliveries.c.trigger_id == row.id,
            deliveries.c.dedupe_key.in_(sorted(keys[row.id])),
            deliveries.c.created_at > now - timedelta(milliseconds=row.idempotency_ttl_ms),
        )
        for row in rows
        if keys.get(row.id)
    ]
    if not conditions:
        return []
    query = (
        select(deliveries.c.trigger_id, deliveries.c.dedupe_key, func.min(deliveries.c.created_at))
        .where(or_(*conditions), deliveries.c.status.in_(WAITING))
        .group_by(deliveries.c.trigger_id, deliveries.c.dedupe_key)
    )
    return list(await connection.execute(query))


# --- deliveries ----------------------------------------------------------------------------


async def insert_deliveries(
    connection: AsyncConnection, rows: Sequence[dict[str, Any]]
) -> set[tuple[str, str]]:
    """Insert new deliveries; returns the (trigger, event) pairs that were new."""
    inserted = await insert_new_returning(
        connection, deliveries, rows, [deliveries.c.trigger_id, deliveries.c.event_id]
    )
    return {(row[0], row[1]) for row in inserted}


async def update_delivery(
    connection: AsyncConnection, delivery_id: str, values: dict[str, Any]
) -> None:
    await connection.execute(
        update(deliveries).where(deliveries.c.id == delivery_id).values(values)
    )


async def update_throttled(
    connection: AsyncConnection, delivery_id: str, values: dict[str, Any]
) -> bool:
    """Update a delivery only while it is still throttled; False when it no longer was.

    The status is checked by the UPDATE itself: on PostgreSQL one that waited for a
    concurrent retry's row lock sees that retry's outcome, and so never overwrites a launch.
    """
    result = await connection.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status == THROTTLED)
        .values(values)
    )
    return result.rowcount == 1


async def get_delivery(connection: AsyncConnection, delivery_id: str) -> Any:
    query = select(deliveries).where(deliveries.c.id == delivery_id)
    return (await connection.execute(query)).first()


async def list_deliveries(
    connection: AsyncConnection,
    trigger_id: str,
    *,
    status: str | None,
    event_id: str | None,
    limit: int,
) -> list[Any]:
    query = select(deliveries).where(deliveries.c.trigger_id == trigger_id)
    if status is not None:
        query = query.where(deliveries.c.status == status)
    if event_id is not None:
        query = query.where(deliveries.c.event_id == event_id)
    query = query.order_by(deliveries.c.created_at.desc(), deliveries.c.id.desc()).limit(limit)
    return list(await connection.execute(query))


async def throttled(
    connection: AsyncConnection,
    trigger_id: str,
    limit: int,
    *,
    due_by: datetime | None = None,
    after: Any = None,
) -> list[Any]:
    """A trigger's throttled deliveries, oldest first: the order they get their turn in.

    `due_by`: only those whose next attempt is due by then, filtered here so that a due one
    is never hidden behind a page of others still waiting. `after`: the page after this row.
    """
    query = select(deliveries).where(
        deliveries.c.trigger_id == trigger_id, deliveries.c.status == THROTTLED
    )
    if due_by is not None:
        query = query.where(
            or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= due_by)
        )
    if after is not None:
        query = query.where(
            or_(
                deliveries.c.created_at > after.created_at,
                and_(deliveries.c.created_at == after.created_at, deliveries.c.id > after.id),
            )
        )
    query = query.order_by(deliveries.c.created_at, deliveries.c.id).limit(limit)
    return list(await connection.execute(query))


async def triggers_with_waiting(connection: AsyncConnection, run_ids: Sequence[str]) -> set[str]:
    """The triggers that launched these runs and have throttled deliveries waiting: the only
    ones a run's end gives anything to do."""
    waiting = aliased(deliveries)
    query = (
        select(deliveries.c.trigger_id)
        .where(
            deliveries.c.workflow_run_id.in_(list(run_ids)),
            exists().where(
                waiting.c.trigger_id == deliveries.c.trigger_id, waiting.c.status == THROTTLED
            ),
        )
        .distinct()
    )
    return set((await connection.execute(query)).scalars())


# --- repair --------------------------------------------------------------------------------


async def unhandled_events(
    connection: AsyncConnection, received_between: tuple[datetime, datetime], limit: int
) -> list[str]:
    """Events handed over (processed) that an active trigger listened to when they arrived,
    and that the trigger worker never handled: their hand-off was lost."""
    events = workflow_events
    listened = exists().where(
        triggers.c.event_type == events.c.type,
        triggers.c.status == "active",
        (triggers.c.event_source.is_(None)) | (triggers.c.event_source == events.c.source),
        triggers.c.created_at <= events.c.received_at,
    )
    query = (
        select(events.c.id)
        .outerjoin(handled, handled.c.event_id == events.c.id)
        .where(
            handled.c.event_id.is_(None),
            events.c.status == PROCESSED,
            events.c.received_at >= received_between[0],
            events.c.received_at < received_between[1],
            listened,
        )
        .order_by(events.c.received_at, events.c.seq)
        .limit(limit)
    )
    return list((await connection.execute(query)).scalars())
