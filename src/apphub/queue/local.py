"""LocalQueue: the embedded-mode JobQueue, a heap and a dict in this process."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

from apphub.queue.base import Handler, HandlerGroup, HandlerStats, QueueCounts, QueueMode


class LocalQueue:
    """An in-process JobQueue: due messages lowest `priority` first, then first in, first out.

    Delays are asyncio timers (precise, no polling) and an idle consumer sleeps on an event.
    Messages are lost with the process, which is acceptable by design: the database rows are
    the durable state and the reconciler re-enqueues whatever was due.
    """

    mode: QueueMode = "inline"

    def __init__(self, name: str) -> None:
        self.name = name
        self._waiting: dict[str, str] = {}  # key -> item id, due or scheduled
        # heap of (priority, arrival, key, due since: time.monotonic()) for the latency figures
        self._due: list[tuple[int, int, str, float]] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._arrivals = itertools.count()
        self._wake = asyncio.Event()
        self._stats = HandlerStats()

    async def enqueue(
        self, item_id: str, *, key: str | None = None, delay_s: float = 0.0, priority: int = 0
    ) -> bool:
        """Queue `item_id` unless a message with the same key is still waiting."""
        key = item_id if key is None else key
        if key in self._waiting:
            return False
        self._waiting[key] = item_id
        if delay_s > 0:
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(delay_s, self._mature, key, priority)
        else:
            self._push(key, priority)
        return True

    async def consume(self, handler: Handler, *, concurrency: int) -> None:
        """Hand due messages to `handler` until cancelled; waiting ones stay queued."""
        group = HandlerGroup(self.name, handler, concurrency, self._stats)
        try:
            while True:
                await group.wait_for_slot()
                group.start(*await self._next_due())
        finally:
            await group.cancel()

    async def counts(self) -> QueueCounts:
        return QueueCounts(
            waiting=len(self._due),
            active=self._stats.active,
            scheduled=len(self._timers),
            failed=self._stats.failed,
            waits=self._stats.waits,  # this process's: an inline queue has no other consumer
        )

    async def close(self) -> None:
        """Forget every waiting message and stop the delay timers."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._due.clear()
        self._waiting.clear()

    def _mature(self, key: str, priority: int) -> None:
        del self._timers[key]
        self._push(key, priority)

    def _push(self, key: str, priority: int) -> None:
        heapq.heappush(self._due, (priority, next(self._arrivals), key, time.monotonic()))
        self._wake.set()

    async def _next_due(self) -> tuple[str, float]:
        """The next due item id, and how long it was due (ms)."""
        # Pop and hand-off happen without an await in between, so cancellation loses nothing.
        while not self._due:
            self._wake.clear()
            await self._wake.wait()
        _, _, key, due_since = heapq.heappop(self._due)
        return self._waiting.pop(key), (time.monotonic() - due_since) * 1000
