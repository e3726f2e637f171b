"""SaqQueue: the scaled-mode JobQueue, saq's Redis queue driven by our own consume loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq.job import Job, Status
from saq.queue.redis import RedisQueue

from apphub.queue.base import (
    Handler,
    HandlerGroup,
    HandlerStats,
    QueueCounts,
    QueueMode,
    WaitStats,
    finish_shielded,
)

log = structlog.get_logger(__name__)

JOB_FUNCTION = "apphub"
"""saq wants a function name; ours is a constant because the handler is given to consume()."""
DEQUEUE_TIMEOUT_S = 1.0
SCHEDULE_INTERVAL_S = 0.5
STRANDED_CHECK_INTERVAL_S = 30.0
RETRY_DELAY_S = 1.0
WAITS_KEY = "apphub_waits"
"""A hash under the queue's namespace: every consumer's hand-offs and their latency."""
_ADD_WAITS = """
redis.call('HINCRBY', KEYS[1], 'count', ARGV[1])
redis.call('HINCRBYFLOAT', KEYS[1], 'total_ms', ARGV[2])
redis.call('HSET', KEYS[1], 'last_ms', ARGV[4])
if tonumber(ARGV[3]) > tonumber(redis.call('HGET', KEYS[1], 'max_ms') or '0') then
    redis.call('HSET', KEYS[1], 'max_ms', ARGV[3])
end
return 1
"""


class SaqQueue:
    """A JobQueue shared by every process that opens the same name on the same Redis.

    Differences from LocalQueue, all deliberate:
    - `priority` is ignored: saq's Redis backend has none, messages go out in arrival order.
    - Delays use saq's scheduled jobs, which consume() moves to the queue by calling saq's
      `schedule()` every 0.5 s; saq runs it at most once a second cluster-wide (a 1 s lock),
      so a delayed message may be handed out up to ~1.5 s late.
    - `counts()`: `waiting` and `scheduled` are the cluster's; `active` and `failed` are this
      process's own handler calls; `waits` are every consumer's, which each adds to a Redis
      hash every 0.5 s (so they lag by that much, and a consumer's last 0.5 s before it stops
      may be missing).
    - Cancelling consume() waits up to `dequeue_timeout_s` for its pending pop and queues
      again whatever that pop brought.
    A message is acked (saq `finish`, and deleted: ttl -1) as soon as it is dequeued, before
    the handler runs; saq dedupes keys of active jobs too, so only that frees the key at once.
    """

    mode: QueueMode = "redis"

    def __init__(
        self, name: str, redis_url: str, *, dequeue_timeout_s: float = DEQUEUE_TIMEOUT_S
    ) -> None:
        """`dequeue_timeout_s` bounds how long cancelling consume() waits for a pending pop."""
        self.name = name
        self._redis = Redis.from_url(redis_url)
        self._queue = RedisQueue(self._redis, name=name)
        self._dequeue_timeout_s = dequeue_timeout_s
        self._stats = HandlerStats()
        self._seen_active: set[bytes] = set()
        self._shared_waits = WaitStats()
        """What this process's `_stats.waits` were when last added to the shared hash."""
        self._add_waits = self._redis.register_script(_ADD_WAITS)

    async def enqueue(
        self, item_id: str, *, key: str | None = None, delay_s: float = 0.0, priority: int = 0
    ) -> bool:
        """Queue `item_id` unless a message with the same key is waiting; `priority` is ignored."""
        job = await self._queue.enqueue(
            JOB_FUNCTION,
            key=item_id if key is None else key,
            scheduled=time.time() + delay_s if delay_s > 0 else 0,
            timeout=0,
            heartbeat=0,
            retries=1,
            ttl=-1,
            item_id=item_id,
        )
        return job is not None

    async def consume(self, handler: Handler, *, concurrency: int) -> None:
        """Hand messages to `handler` until cancelled, and move due delayed messages meanwhile."""
        group = HandlerGroup(self.name, handler, concurrency, self._stats)
        upkeep = asyncio.create_task(self._upkeep(), name=f"{self.name}:upkeep")
        try:
            while True:
                await group.wait_for_slot()
                job = await self._receive()
                if job is None:
                    group.release_slot()
                else:
                    group.start(_item_id(job), _waited_ms(job))
        finally:
            upkeep.cancel()
            await finish_shielded(asyncio.gather(upkeep, return_exceptions=True))
            await group.cancel()

    async def counts(self) -> QueueCounts:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.llen(self._queue.namespace("queued"))
            pipe.llen(self._queue.namespace("active"))
            pipe.zcard(self._queue.namespace("incomplete"))
            pipe.hgetall(self._queue.namespace(WAITS_KEY))
            queued, taken, incomplete, waits = await pipe.execute()
        return QueueCounts(
            waiting=queued,
            active=self._stats.active,
            scheduled=incomplete - queued - taken,
            failed=self._stats.failed,
            waits=_wait_stats(waits),
        )

    async def close(self) -> None:
        await self._queue.disconnect()

    async def recover_stranded(self) -> list[str]:
        """Free the keys of messages a crashed consumer popped but never acked.

        Such a message stays in saq's active list and would block its key for ever; one seen
        there on two checks in a row is dropped (its row is re-enqueued by the reconciler).
        """
        # A pipeline because redis-py types a single command's result as sync-or-awaitable.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lrange(self._queue.namespace("active"), 0, -1)
            (listed,) = await pipe.execute()
        active = set(listed)
        stranded = active & self._seen_active
        self._seen_active = active - stranded
        if stranded:
            await self._drop(stranded)
        return sorted(self._queue.job_key_from_id(job_id.decode()) for job_id in stranded)

    async def _drop(self, job_ids: set[bytes]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for job_id in job_ids:
                pipe.lrem(self._queue.namespace("active"), 0, job_id.decode())
                pipe.zrem(self._queue.namespace("incomplete"), job_id)
                pipe.delete(job_id)
            await pipe.execute()
        log.warning("queue dropped stranded messages", queue=self.name, count=len(job_ids))

    async def _share_waits(self) -> None:
        """Add this process's hand-offs since the last call to the cluster's figures."""
        current, shared = self._stats.waits, self._shared_waits
        if current.count == shared.count:
            return
        await self._add_waits(
            keys=[self._queue.namespace(WAITS_KEY)],
            args=[
                current.count - shared.count,
                f"{current.total_ms - shared.total_ms:.3f}",  # plain decimals for Redis
                f"{current.max_ms:.3f}",
                f"{current.last_ms:.3f}",
            ],
        )
        self._shared_waits = current

    async def _receive(self) -> Job | None:
        """Pop and ack one message; a cancellation waits for the pop and puts its message back."""
        receipt = asyncio.ensure_future(self._dequeue_and_ack())
        try:
            return await asyncio.shield(receipt)
        except asyncio.CancelledError:
            await finish_shielded(asyncio.ensure_future(self._put_back(receipt)))
            raise
        except (RedisError, OSError):
            log.warning("queue receive failed", queue=self.name, exc_info=True)
            await asyncio.sleep(RETRY_DELAY_S)
            return None

    async def _dequeue_and_ack(self) -> Job | None:
        job = await self._queue.dequeue(timeout=self._dequeue_timeout_s)
        if job is not None:
            await self._queue.finish(job, Status.COMPLETE)
        return job

    async def _put_back(self, receipt: asyncio.Future[Job | None]) -> None:
        try:
            job = await receipt
            if job is not None:
                await self.enqueue(_item_id(job), key=job.key)
        except (RedisError, OSError):
            log.warning("queue could not put a message back", queue=self.name, exc_info=True)

    async def _upkeep(self) -> None:
        next_check = time.monotonic() + STRANDED_CHECK_INTERVAL_S
        while True:
            try:
                await self._queue.schedule()
                await self._share_waits()
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + STRANDED_CHECK_INTERVAL_S
                    await self.recover_stranded()
            except (RedisError, OSError):
                log.warning("queue upkeep failed", queue=self.name, exc_info=True)
            await asyncio.sleep(SCHEDULE_INTERVAL_S)


def _waited_ms(job: Job) -> float:
    """How long `job` was due: since it was enqueued (saq's `queued`, epoch ms) or, for a
    delayed one, since its delay ran out (`scheduled`, epoch s)."""
    due_ms = max(float(job.queued or 0), float(job.scheduled or 0) * 1000)
    return time.time() * 1000 - due_ms if due_ms else 0.0


def _wait_stats(fields: dict[bytes, bytes]) -> WaitStats:
    def number(name: bytes) -> float:
        return float(fields.get(name, b"0"))

    return WaitStats(
        int(number(b"count")), number(b"total_ms"), number(b"max_ms"), number(b"last_ms")
    )


def _item_id(job: Job) -> str:
    kwargs: dict[str, Any] = job.kwargs or {}
    return str(kwargs.get("item_id", job.key))
