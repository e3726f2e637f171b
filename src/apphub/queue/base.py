"""The JobQueue seam: a queue message is only a wake-up call carrying an id.

The database rows are the source of truth; every handler re-reads its row and is idempotent,
and a reconciler re-enqueues rows a crash left behind. So a queue hands each message out at
most once and acks it on receipt: simple beats exactly-once here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import structlog

log = structlog.get_logger(__name__)

Handler = Callable[[str], Awaitable[None]]
QueueMode = Literal["inline", "redis"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WaitStats:
    """How long messages waited between becoming due and being handed to a handler: latency.

    Due means enqueued, or for a delayed message its delay run out: a delay asked for is not
    latency, so a retry scheduled minutes ahead does not make the queue look slow.
    """

    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    last_ms: float = 0.0

    @property
    def avg_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0

    def add(self, waited_ms: float) -> WaitStats:
        waited_ms = max(0.0, waited_ms)  # clocks of two machines may disagree a little
        return WaitStats(
            self.count + 1, self.total_ms + waited_ms, max(self.max_ms, waited_ms), waited_ms
        )


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """A snapshot for health pages and metrics; `active` and `failed` are this process's own."""

    waiting: int
    """Due now, not yet handed to a handler."""
    active: int
    """Handed to a handler of this process that has not returned."""
    scheduled: int
    """Delayed, not due yet."""
    failed: int
    """Handler calls of this process that raised."""
    waits: WaitStats = field(default_factory=WaitStats)
    """Hand-offs so far and their latency; whose, each implementation says."""


class JobQueue(Protocol):
    """Hands ids to handlers; LocalQueue in one process, SaqQueue across a Redis cluster."""

    name: str
    mode: QueueMode

    async def enqueue(
        self, item_id: str, *, key: str | None = None, delay_s: float = 0.0, priority: int = 0
    ) -> bool:
        """Queue `item_id`; False (and nothing changes) while a message with `key` is waiting.

        `key` defaults to `item_id`. A message stops waiting when it is handed to a handler,
        so an id can be enqueued again while its handler runs.
        """
        ...

    async def consume(self, handler: Handler, *, concurrency: int) -> None:
        """Hand messages to `handler`, at most `concurrency` calls at once, until cancelled.

        A handler that raises is logged and counted; cancelling stops in-flight handlers and
        leaves waiting messages queued.
        """
        ...

    async def counts(self) -> QueueCounts: ...

    async def close(self) -> None:
        """Release the queue's resources; cancel consume() first."""
        ...


@dataclass(slots=True)
class HandlerStats:
    """The per-process half of QueueCounts, kept across consume() calls."""

    active: int = 0
    failed: int = 0
    waits: WaitStats = field(default_factory=WaitStats)
    """Hand-offs to this process's handlers and how long those messages had waited."""


class HandlerGroup:
    """Runs handler calls as tasks, at most `concurrency` at once.

    Shared by every JobQueue so that concurrency, failure and cancellation behave the same.
    """

    def __init__(
        self, queue_name: str, handler: Handler, concurrency: int, stats: HandlerStats
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._queue_name = queue_name
        self._handler = handler
        self._stats = stats
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def wait_for_slot(self) -> None:
        """Reserve a slot before taking a message, so nothing is taken that cannot run."""
        await self._slots.acquire()

    def release_slot(self) -> None:
        """Give back a reserved slot that no message came for."""
        self._slots.release()

    def start(self, item_id: str, waited_ms: float) -> None:
        """Run the handler for `item_id` in the slot reserved by wait_for_slot().

        `waited_ms` is how long the message was due before this hand-off (see WaitStats).
        """
        self._stats.waits = self._stats.waits.add(waited_ms)
        task = asyncio.create_task(self._call(item_id), name=f"{self._queue_name}:{item_id}")
        self._stats.active += 1
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def cancel(self) -> None:
        """Cancel the handlers still running and wait until they have stopped."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await finish_shielded(asyncio.gather(*tasks, return_exceptions=True))

    async def _call(self, item_id: str) -> None:
        try:
            await self._handler(item_id)
        except Exception:
            self._stats.failed += 1
            log.exception("queue handler failed", queue=self._queue_name, item_id=item_id)

    def _finished(self, task: asyncio.Task[None]) -> None:
        # A done callback, not a `finally`: it also runs for a task cancelled before it started.
        self._tasks.discard(task)
        self._stats.active -= 1
        self._slots.release()


async def finish_shielded(future: asyncio.Future[T]) -> T:
    """Wait for `future` even through repeated cancellation of the caller.

    For clean-up that must not stop halfway (handlers left running, a popped message lost);
    the caller is already unwinding from a cancellation and re-raises it afterwards.
    """
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                return future.result()  # raises if `future` itself was cancelled
