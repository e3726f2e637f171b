"""One contract for every JobQueue: LocalQueue in-process and SaqQueue on a real Redis.

Where the two differ by design (priorities, delay precision), the backend declares it and the
same test checks the declared behaviour.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis
from saq.queue.redis import RedisQueue
from structlog.testing import capture_logs

from apphub.queue import Handler, JobQueue, LocalQueue, create_queue
from apphub.queue.saq import SaqQueue

# Cancelling a consumer waits for its pending Redis pop; a short pop keeps the tests quick.
TEST_DEQUEUE_TIMEOUT_S = 0.1
WAIT_S = 5.0


@dataclass
class QueueBackend:
    """How to open a queue "in another process", and what this implementation declares."""

    kind: str
    name: str
    open: Callable[[], JobQueue]
    by_priority: bool
    """Due messages go out lowest priority first (else in arrival order)."""
    delay_lateness_s: float
    """How late after its delay a delayed message may be handed out."""


@pytest.fixture(params=["local", "saq"])
async def queues(request: pytest.FixtureRequest) -> AsyncIterator[QueueBackend]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    opened: list[JobQueue] = []
    if request.param == "local":
        local = LocalQueue(name)
        opened.append(local)
        yield QueueBackend("local", name, lambda: local, by_priority=True, delay_lateness_s=0.2)
    else:
        url: str = request.getfixturevalue("redis_url")

        def open_saq() -> JobQueue:
            opened.append(SaqQueue(name, url, dequeue_timeout_s=TEST_DEQUEUE_TIMEOUT_S))
            return opened[-1]

        yield QueueBackend("saq", name, open_saq, by_priority=False, delay_lateness_s=2.0)
        await _delete_saq_keys(url, name)
    for queue in opened:
        await queue.close()


async def _delete_saq_keys(url: str, name: str) -> None:
    redis = Redis.from_url(url)
    try:
        for pattern in (f"saq:{name}:*", f"saq:job:{name}:*"):
            keys = [key async for key in redis.scan_iter(match=pattern)]
            if keys:
                await redis.delete(*keys)
    finally:
        await redis.aclose()


@dataclass
class Recorder:
    """A handler that records the ids it was given and lets a test wait for them."""

    ids: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __call__(self, item_id: str) -> None:
        async with self.changed:
            self.ids.append(item_id)
            self.changed.notify_all()

    async def wait_for(self, item_id: str) -> None:
        await self._wait(lambda: item_id in self.ids)

    async def wait_for_count(self, count: int) -> None:
        await self._wait(lambda: len(self.ids) >= count)

    async def _wait(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S), self.changed:
            await self.changed.wait_for(predicate)


@asynccontextmanager
async def consuming(queue: JobQueue, handler: Handler, concurrency: int = 1) -> AsyncIterator[None]:
    task = asyncio.create_task(queue.consume(handler, concurrency=concurrency))
    try:
        yield
    finally:
        await _cancel(task)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


class TestJobQueueContract:
    async def test_handler_receives_the_enqueued_id(self, queues: QueueBackend) -> None:
        queue, recorder = queues.open(), Recorder()
        assert await queue.enqueue("run-1") is True
        async with consuming(queue, recorder):
            await recorder.wait_for("run-1")
        assert recorder.ids == ["run-1"]

    async def test_a_waiting_key_is_not_enqueued_twice(self, queues: QueueBackend) -> None:
        queue, recorder = queues.open(), Recorder()
        assert await queue.enqueue("run-1") is True
        assert await queue.enqueue("run-1") is False
        assert await queue.enqueue("timer-a", key="shared") is True
        assert await queue.enqueue("timer-b", key="shared") is False
        assert await queue.enqueue("end") is True
        async with consuming(queue, recorder):
            await recorder.wait_for("end")  # FIFO: a duplicate would have come before it
        assert recorder.ids == ["run-1", "timer-a", "end"]

    async def test_an_id_can_be_enqueued_again_while_its_handler_runs(
        self, queues: QueueBackend
    ) -> None:
        queue, recorder = queues.open(), Recorder()
        started, release = asyncio.Event(), asyncio.Event()

        async def handler(item_id: str) -> None:
            await recorder(item_id)
            started.set()
            await release.wait()

        await queue.enqueue("run-1")
        async with consuming(queue, handler):
            await asyncio.wait_for(started.wait(), WAIT_S)
            assert await queue.enqueue("run-1") is True
            release.set()
            await recorder.wait_for_count(2)
        assert recorder.ids == ["run-1", "run-1"]

    async def test_a_delayed_message_waits_for_its_delay(self, queues: QueueBackend) -> None:
        queue, received_at = queues.open(), asyncio.get_running_loop().create_future()

        async def handler(item_id: str) -> None:
            received_at.set_result(time.monotonic())

        delay_s, enqueued_at = 0.3, time.monotonic()
        await queue.enqueue("timer-1", delay_s=delay_s)
        assert (await queue.counts()).scheduled == 1
        async with consuming(queue, handler):
            elapsed = await asyncio.wait_for(received_at, WAIT_S) - enqueued_at
        assert delay_s - 0.01 <= elapsed <= delay_s + queues.delay_lateness_s

    async def test_at_most_concurrency_handlers_run_at_once(self, queues: QueueBackend) -> None:
        queue, done = queues.open(), Recorder()
        running, most = 0, 0

        async def handler(item_id: str) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.05)
            running -= 1
            await done(item_id)

        for n in range(20):
            await queue.enqueue(f"run-{n}")
        async with consuming(queue, handler, concurrency=3):
            await done.wait_for_count(20)
        assert most == 3
        assert sorted(done.ids) == sorted(f"run-{n}" for n in range(20))

    async def test_handler_errors_are_logged_counted_and_survived(
        self, queues: QueueBackend
    ) -> None:
        queue, recorder = queues.open(), Recorder()

        async def handler(item_id: str) -> None:
            await recorder(item_id)
            if item_id.startswith("bad"):
                raise RuntimeError(f"{item_id} failed")

        for item_id in ("bad-1", "good-1", "bad-2", "end"):
            await queue.enqueue(item_id)
        with capture_logs() as logs:
            async with consuming(queue, handler):
                await recorder.wait_for("end")
        assert recorder.ids == ["bad-1", "good-1", "bad-2", "end"]
        assert (await queue.counts()).failed == 2
        failures = [entry for entry in logs if entry["event"] == "queue handler failed"]
        assert [entry["item_id"] for entry in failures] == ["bad-1", "bad-2"]

    async def test_counts_waiting_scheduled_and_active(self, queues: QueueBackend) -> None:
        queue = queues.open()
        started, release = asyncio.Event(), asyncio.Event()

        async def handler(item_id: str) -> None:
            started.set()
            await release.wait()

        await queue.enqueue("run-1")
        await queue.enqueue("run-2")
        await queue.enqueue("timer-1", delay_s=60)
        counts = await queue.counts()
        assert (counts.waiting, counts.active, counts.scheduled, counts.failed) == (2, 0, 1, 0)
        async with consuming(queue, handler):
            await asyncio.wait_for(started.wait(), WAIT_S)
            counts = await queue.counts()
            assert (counts.waiting, counts.active, counts.scheduled) == (1, 1, 1)
            release.set()

    async def test_cancelling_consume_stops_handlers_and_keeps_waiting_messages(
        self, queues: QueueBackend
    ) -> None:
        """For saq, a second queue object on the same name stands for another process."""
        first, started, stopped = queues.open(), asyncio.Event(), asyncio.Event()

        async def stuck(item_id: str) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                stopped.set()

        ids = [f"run-{n}" for n in range(5)]
        for item_id in ids:
            await first.enqueue(item_id)
        consumer = asyncio.create_task(first.consume(stuck, concurrency=1))
        await asyncio.wait_for(started.wait(), WAIT_S)
        await _cancel(consumer)
        assert stopped.is_set()
        assert (await first.counts()).waiting == 4

        second, recorder = queues.open(), Recorder()
        async with consuming(second, recorder):
            await recorder.wait_for(ids[-1])
        assert recorder.ids == ids[1:]

    async def test_hand_out_order(self, queues: QueueBackend) -> None:
        """Declared difference: LocalQueue honours priority, saq on Redis keeps arrival order."""
        queue, recorder = queues.open(), Recorder()
        arrivals = [("low", 5), ("high", -1), ("mid-1", 0), ("mid-2", 0)]
        for item_id, priority in arrivals:
            await queue.enqueue(item_id, priority=priority)
        async with consuming(queue, recorder):
            await recorder.wait_for_count(4)
        if queues.by_priority:
            assert recorder.ids == ["high", "mid-1", "mid-2", "low"]
        else:
            assert recorder.ids == ["low", "high", "mid-1", "mid-2"]


class TestSaqQueue:
    """What only the Redis implementation has: crash recovery of a popped, unacked message."""

    @pytest.fixture
    async def name(self, redis_url: str) -> AsyncIterator[str]:
        name = f"test-{uuid.uuid4().hex[:12]}"
        yield name
        await _delete_saq_keys(redis_url, name)

    async def test_a_message_stranded_by_a_crash_frees_its_key(
        self, redis_url: str, name: str
    ) -> None:
        queue = SaqQueue(name, redis_url)
        crashed = RedisQueue.from_url(redis_url, name=name)
        try:
            await queue.enqueue("run-1")
            assert await crashed.dequeue(timeout=1) is not None  # popped, never acked
            assert await queue.enqueue("run-1") is False
            assert await queue.recover_stranded() == []  # first sighting: maybe in flight
            assert await queue.recover_stranded() == ["run-1"]
            assert await queue.enqueue("run-1") is True
        finally:
            await crashed.disconnect()
            await queue.close()

    async def test_a_message_popped_as_consume_is_cancelled_goes_back(
        self, redis_url: str, name: str
    ) -> None:
        """Cancelling waits for the pending pop; what it brought is queued again, not lost."""
        queue, producer = SaqQueue(name, redis_url, dequeue_timeout_s=5), SaqQueue(name, redis_url)
        try:
            consumer = asyncio.create_task(queue.consume(Recorder(), concurrency=1))
            await asyncio.sleep(0.1)  # the consumer is waiting in its pop
            consumer.cancel()
            await producer.enqueue("run-1")
            await _cancel(consumer)
            counts = await producer.counts()
            assert (counts.waiting, counts.scheduled) == (1, 0)
            recorder = Recorder()
            async with consuming(producer, recorder):
                await recorder.wait_for("run-1")
        finally:
            await queue.close()
            await producer.close()


class TestCreateQueue:
    async def test_inline_is_a_local_queue(self) -> None:
        queue = create_queue("runs", "inline")
        assert isinstance(queue, LocalQueue)
        assert (queue.name, queue.mode) == ("runs", "inline")

    async def test_a_redis_url_is_a_saq_queue(self, redis_url: str) -> None:
        queue = create_queue("runs", redis_url)
        try:
            assert isinstance(queue, SaqQueue)
            assert (queue.name, queue.mode) == ("runs", "redis")
        finally:
            await queue.close()
