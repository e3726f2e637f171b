"""Durable timers: the one mechanism for everything delayed (freshness expiry, cooldown ends).

A timer is a row with a due time. Embedded, one loop sleeps until the earliest due row and is
woken when an earlier one is added; scaled, a delayed queue message is the wake-up and every
loop still looks at the rows (a lost message only delays a timer). Firing claims the row
first, so two processes never fire the same timer, and deletes it after its handler ran, so
a process that dies while firing leaves it to be fired again. A service claims only the
kinds it has handlers for (the materializer's timers are not the scheduler's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from apphub.domain.base import utc_now
from apphub.queue import JobQueue
from apphub.store import timers as timer_store
from apphub.store.database import Database

log = structlog.get_logger(__name__)

TimerHandler = Callable[[Any], Awaitable[None]]
STALE_CLAIM = timedelta(seconds=60)
LONGEST_SLEEP_S = 30.0
BATCH = 100


class TimerService:
    def __init__(self, database: Database, wakeups: JobQueue | None = None) -> None:
        self.database = database
        self.wakeups = wakeups
        """A queue for delayed wake-up messages across processes (None: this process only)."""
        self.handlers: dict[str, TimerHandler] = {}
        self._wake = asyncio.Event()

    def on(self, kind: str, handler: TimerHandler) -> None:
        self.handlers[kind] = handler

    async def wake(self, due_at: datetime) -> None:
        """Tell the loops a timer is due at `due_at` (call after the commit that stored it)."""
        self._wake.set()
        if self.wakeups is not None:
            delay = max(0.0, (due_at - utc_now()).total_seconds())
            key = f"timer:{int(due_at.timestamp() * 1000)}"
            await self.wakeups.enqueue("timers", key=key, delay_s=delay)

    async def run(self, *, close_wakeups: bool = True) -> None:
        """Fire timers until cancelled; `close_wakeups=False` when it may run again (a
        scheduler that loses and regains its role), and `close()` is called at the end."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._loop())
                if self.wakeups is not None:
                    group.create_task(self.wakeups.consume(self._on_wakeup, concurrency=1))
        finally:
            if close_wakeups:
                await self.close()

    async def close(self) -> None:
        if self.wakeups is not None:
            await self.wakeups.close()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            await self.fire_due_once()
            async with self.database.read() as connection:
                earliest = await timer_store.earliest_due(
                    connection, utc_now() - STALE_CLAIM, list(self.handlers)
                )
            sleep = LONGEST_SLEEP_S
            if earliest is not None:
                sleep = min(sleep, max(0.0, (earliest - utc_now()).total_seconds()))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the wake-up does, and the loop would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep):
                    await self._wake.wait()

    async def _on_wakeup(self, _: str) -> None:
        await self.fire_due_once()

    async def fire_due_once(self) -> int:
        """Fire every timer that is due; returns how many fired."""
        fired = 0
        while True:
            now = utc_now()
            async with self.database.write() as connection:
                rows = await timer_store.claim_due(
                    connection, now, now - STALE_CLAIM, BATCH, list(self.handlers)
                )
            for row in rows:
                await self._fire(row)
            fired += len(rows)
            if len(rows) < BATCH:
                return fired

    async def _fire(self, row: Any) -> None:
        handler = self.handlers.get(row.kind)
        if handler is None:
            log.warning("no handler for timer", kind=row.kind, key=row.key)
            return
        try:
            await handler(row)
        except Exception:
            log.exception("timer handler failed; it will fire again", kind=row.kind, key=row.key)
            return
        async with self.database.write() as connection:
            await timer_store.finish(connection, row.id, row.due_at)
