"""Durable timers: rows with a due time. Claimed before firing, deleted after, so a timer
whose process dies while firing is fired again, and a timer rescheduled meanwhile is kept."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.store.dialect import upsert
from apphub.store.tables import durable_timers as timers


async def schedule(
    connection: AsyncConnection,
    kind: str,
    key: str,
    due_at: datetime,
    payload: dict[str, Any],
    now: datetime,
    *,
    as_of: datetime | None = None,
) -> None:
    """Create the timer, or move it to `due_at` (a newer production replaces an expiry).

    `as_of`: the moment the timer stands for (the production an expiry follows); a timer
    standing for a later moment is kept, so a replayed or backfilled older production never
    moves the newest one's expiry.
    """
    await upsert(
        connection,
        timers,
        {
            "kind": kind,
            "key": key,
            "due_at": due_at,
            "payload": payload,
            "claimed_at": None,
            "created_at": now,
            "as_of": as_of,
        },
        conflict=("kind", "key"),
        update=("due_at", "payload", "claimed_at", "as_of"),
        unless_newer="as_of",
    )


def _unclaimed(stale_claim: datetime, kinds: Sequence[str]) -> Any:
    return and_(
        timers.c.kind.in_(list(kinds)),
        or_(timers.c.claimed_at.is_(None), timers.c.claimed_at < stale_claim),
    )


async def earliest_due(
    connection: AsyncConnection, stale_claim: datetime, kinds: Sequence[str]
) -> datetime | None:
    """The next due time among timers of these kinds (the ones a process can fire)."""
    moment: datetime | None = await connection.scalar(
        select(func.min(timers.c.due_at)).where(_unclaimed(stale_claim, kinds))
    )
    return moment


async def claim_due(
    connection: AsyncConnection,
    now: datetime,
    stale_claim: datetime,
    limit: int,
    kinds: Sequence[str],
) -> list[Any]:
    """Take due timers of these kinds to fire; concurrent processes never take the same one."""
    due = (
        select(timers.c.id)
        .where(timers.c.due_at <= now, _unclaimed(stale_claim, kinds))
        .order_by(timers.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = await connection.execute(
        update(timers)
        .where(timers.c.id.in_(due.scalar_subquery()))
        .values(claimed_at=now)
        .returning(timers)
    )
    return sorted(rows, key=lambda row: row.due_at)


async def finish(connection: AsyncConnection, timer_id: int, due_at: datetime) -> None:
    """Delete a fired timer, unless it was rescheduled while firing."""
    await connection.execute(
        delete(timers).where(timers.c.id == timer_id, timers.c.due_at == due_at)
    )


async def cancel(connection: AsyncConnection, kind: str, key: str) -> None:
    await connection.execute(delete(timers).where(timers.c.kind == kind, timers.c.key == key))


async def list_timers(connection: AsyncConnection, kind: str, key_prefixes: list[str]) -> list[Any]:
    if not key_prefixes:
        return []
    rows = await connection.execute(
        select(timers)
        .where(timers.c.kind == kind, or_(*(timers.c.key.startswith(p) for p in key_prefixes)))
        .order_by(timers.c.due_at)
    )
    return list(rows)
