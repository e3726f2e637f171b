"""The event log: stored once per id, queried newest first with a keyset cursor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from apphub.store.dialect import insert_new_returning
from apphub.store.tables import workflow_events

events = workflow_events

RECEIVED, DEFERRED, PROCESSING, PROCESSED = "received", "deferred", "processing", "processed"
"""received → processed; or → deferred (rate limited) → processing (claimed) → processed.
A `processing` claim carries its time in `available_at`; one left by a dead process is taken
again by the repair loop."""


async def insert_events(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Store events; an id seen before is skipped. Returns the new rows (with their seq)."""
    return await insert_new_returning(connection, events, rows, [events])


async def mark(
    connection: AsyncConnection, seqs: Sequence[int], status: str, available_at: datetime | None
) -> None:
    if seqs:
        await connection.execute(
            update(events)
            .where(events.c.seq.in_(list(seqs)))
            .values(status=status, available_at=available_at)
        )


async def claim_deferred_due(connection: AsyncConnection, now: datetime, limit: int) -> list[Any]:
    """Take deferred events whose pause is over; only one process wins each."""
    due = (
        select(events.c.seq)
        .where(events.c.status == DEFERRED, events.c.available_at <= now)
        .order_by(events.c.available_at, events.c.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return await _claim(connection, due, now)


async def _claim(connection: AsyncConnection, chosen: Any, now: datetime) -> list[Any]:
    rows = await connection.execute(
        update(events)
        .where(events.c.seq.in_(chosen.scalar_subquery()))
        .values(status=PROCESSING, available_at=now)
        .returning(events)
    )
    return sorted(rows, key=lambda row: row.seq)


async def next_deferred(connection: AsyncConnection) -> datetime | None:
    moment: datetime | None = await connection.scalar(
        select(func.min(events.c.available_at)).where(events.c.status == DEFERRED)
    )
    return moment


async def claim_unprocessed(
    connection: AsyncConnection, before: datetime, now: datetime, limit: int
) -> list[Any]:
    """Take events stored (or claimed) before `before` and never processed: their process
    stopped in between."""
    stuck = (
        select(events.c.seq)
        .where(
            or_(
                and_(events.c.status == RECEIVED, events.c.received_at < before),
                and_(events.c.status == PROCESSING, events.c.available_at < before),
            )
        )
        .order_by(events.c.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return await _claim(connection, stuck, now)


async def by_id(connection: AsyncConnection, event_id: str) -> Any:
    return (await connection.execute(select(events).where(events.c.id == event_id))).first()


async def by_ids(connection: AsyncConnection, event_ids: Sequence[str]) -> list[Any]:
    """The stored events among these ids, in the order the ids were given."""
    if not event_ids:
        return []
    rows = await connection.execute(select(events).where(events.c.id.in_(list(event_ids))))
    found = {row.id: row for row in rows}
    return [found[event_id] for event_id in dict.fromkeys(event_ids) if event_id in found]


async def after_seq(connection: AsyncConnection, seq: int, limit: int) -> list[Any]:
    """Processed events stored after `seq`, oldest first (a WebSocket replay)."""
    rows = await connection.execute(
        select(events)
        .where(events.c.seq > seq, events.c.status == PROCESSED)
        .order_by(events.c.seq)
        .limit(limit)
    )
    return list(rows)


@dataclass(frozen=True)
class EventFilter:
    type: str | None = None
    source: str | None = None
    correlation_id: str | None = None
    severity: str | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    json_path: Any = None
    """A SQL condition on the payload, built by `jsonpath_sql` for this dialect."""


def _filtered(query: Select[Any], where: EventFilter) -> Select[Any]:
    if where.type is not None:
        query = query.where(events.c.type == where.type)
    if where.source is not None:
        query = query.where(events.c.source == where.source)
    if where.correlation_id is not None:
        query = query.where(events.c.correlation_id == where.correlation_id)
    if where.severity is not None:
        query = query.where(events.c.severity == where.severity)
    if where.occurred_from is not None:
        query = query.where(events.c.occurred_at >= where.occurred_from)
    if where.occurred_to is not None:
        query = query.where(events.c.occurred_at <= where.occurred_to)
    if where.json_path is not None:
        query = query.where(where.json_path)
    return query


async def query_events(
    connection: AsyncConnection,
    where: EventFilter,
    limit: int,
    before: tuple[datetime, str] | None = None,
) -> list[Any]:
    """Newest first by (occurredAt, id); `before` continues after the previous page's last."""
    query = _filtered(select(events), where)
    if before is not None:  # a row comparison, which both databases answer from the index
        query = query.where(tuple_(events.c.occurred_at, events.c.id) < tuple_(*before))
    query = query.order_by(events.c.occurred_at.desc(), events.c.id.desc()).limit(limit)
    return list(await connection.execute(query))


async def sample(
    connection: AsyncConnection, where: EventFilter, since: datetime, limit: int
) -> list[tuple[str, datetime]]:
    """(severity, occurredAt) of recent matching events, newest first, for view analytics."""
    query = _filtered(select(events.c.severity, events.c.occurred_at), where)
    query = query.where(events.c.occurred_at >= since)
    rows = await connection.execute(query.order_by(events.c.occurred_at.desc()).limit(limit))
    return [(row.severity, row.occurred_at) for row in rows]


async def prune(connection: AsyncConnection, received_before: datetime, batch: int) -> int:
    """Delete up to `batch` events received before the cut-off; returns how many."""
    doomed = select(events.c.seq).where(events.c.received_at < received_before).limit(batch)
    result = await connection.execute(delete(events).where(events.c.seq.in_(doomed)))
    return result.rowcount


async def counts_by_status(connection: AsyncConnection) -> dict[str, int]:
    rows = await connection.execute(select(events.c.status, func.count()).group_by(events.c.status))
    return {str(row[0]): int(row[1]) for row in rows}
