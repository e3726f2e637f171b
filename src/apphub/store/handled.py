"""Ledgers of handled events (the materializer's, the trigger worker's): a row per event a
consumer has handled, written with what it decided, so a redelivery is a no-op and an event
whose hand-off was lost can be found and handled by a repair pass."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, delete
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.store.dialect import insert_new_returning


async def mark_handled(
    connection: AsyncConnection, ledger: Table, events: Sequence[tuple[str, str]], now: datetime
) -> set[str]:
    """Note these (id, type) events as handled now; returns the ids not handled before."""
    rows = [{"event_id": i, "event_type": t, "handled_at": now} for i, t in events]
    inserted = await insert_new_returning(connection, ledger, rows, [ledger.c.event_id])
    return {row[0] for row in inserted}


async def prune_handled(connection: AsyncConnection, ledger: Table, before: datetime) -> int:
    result = await connection.execute(delete(ledger).where(ledger.c.handled_at < before))
    return result.rowcount
