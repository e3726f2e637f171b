"""One contract for every Broadcaster: in-process and Redis pub/sub (on a real Redis)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from apphub.bus import Broadcaster, LocalBroadcaster, Subscription, create_broadcaster
from apphub.bus.redis_broadcast import RedisBroadcaster

SMALL_BUFFER = 5


@dataclass
class BroadcastBackend:
    kind: str
    broadcaster: Broadcaster
    peer: Callable[[], Broadcaster]
    """A broadcaster "in another process": a new instance on Redis, the same one in-process."""


@pytest.fixture(params=["local", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[BroadcastBackend]:
    if request.param == "local":
        local = LocalBroadcaster(SMALL_BUFFER)
        yield BroadcastBackend("local", local, lambda: local)
        await local.close()
        return
    url: str = request.getfixturevalue("redis_url")
    opened = [RedisBroadcaster(url, buffer_size=SMALL_BUFFER)]

    def peer() -> Broadcaster:
        opened.append(RedisBroadcaster(url, buffer_size=SMALL_BUFFER))
        return opened[-1]

    yield BroadcastBackend("redis", opened[0], peer)
    for broadcaster in opened:
        await broadcaster.close()


@pytest.fixture
def channel() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def _receive(subscription: Subscription, count: int) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = []
    for _ in range(count):
        message = await subscription.get(timeout=5)
        assert message is not None, f"only {len(messages)} of {count} messages arrived"
        messages.append(message)
    return messages


class TestBroadcasterContract:
    async def test_every_subscriber_gets_every_message_in_order(
        self, bus: BroadcastBackend, channel: str
    ) -> None:
        sent = [{"n": n, "run": {"id": "r1", "tags": ["a", "b"]}} for n in range(4)]
        async with (
            bus.broadcaster.subscribe(channel) as first,
            bus.broadcaster.subscribe(channel) as second,
        ):
            for message in sent:
                await bus.broadcaster.publish(channel, message)
            assert await _receive(first, 4) == sent
            assert await _receive(second, 4) == sent

    async def test_a_message_published_before_subscribing_is_not_received(
        self, bus: BroadcastBackend, channel: str
    ) -> None:
        await bus.broadcaster.publish(channel, {"n": "early"})
        async with bus.broadcaster.subscribe(channel) as subscription:
            await bus.broadcaster.publish(channel, {"n": "late"})
            assert await _receive(subscription, 1) == [{"n": "late"}]
            assert await subscription.get(timeout=0.05) is None

    async def test_channels_are_isolated(self, bus: BroadcastBackend, channel: str) -> None:
        other = f"{channel}-other"
        async with (
            bus.broadcaster.subscribe(channel) as mine,
            bus.broadcaster.subscribe(other) as theirs,
        ):
            await bus.broadcaster.publish(other, {"for": "theirs"})
            await bus.broadcaster.publish(channel, {"for": "mine"})
            assert await _receive(mine, 1) == [{"for": "mine"}]
            assert await _receive(theirs, 1) == [{"for": "theirs"}]
            assert await mine.get(timeout=0.05) is None

    async def test_overflow_drops_the_oldest_and_counts_them(
        self, bus: BroadcastBackend, channel: str
    ) -> None:
        marker = f"{channel}-marker"
        async with (
            bus.broadcaster.subscribe(channel) as slow,
            bus.broadcaster.subscribe(marker) as after,
        ):
            for n in range(SMALL_BUFFER + 3):
                await bus.broadcaster.publish(channel, {"n": n})
            await bus.broadcaster.publish(marker, {"done": True})
            await _receive(after, 1)  # delivered in publish order: `slow` has had all 8
            assert slow.dropped == 3
            assert await _receive(slow, SMALL_BUFFER) == [{"n": n} for n in range(3, 8)]

    async def test_a_publish_from_another_process_is_received(
        self, bus: BroadcastBackend, channel: str
    ) -> None:
        other = bus.peer()
        async with bus.broadcaster.subscribe(channel) as subscription:
            await other.publish(channel, {"from": "elsewhere"})
            assert await _receive(subscription, 1) == [{"from": "elsewhere"}]

    async def test_resubscribing_after_the_last_subscriber_left(
        self, bus: BroadcastBackend, channel: str
    ) -> None:
        async with bus.broadcaster.subscribe(channel):
            pass
        async with bus.broadcaster.subscribe(channel) as again:
            await bus.broadcaster.publish(channel, {"n": 1})
            assert await _receive(again, 1) == [{"n": 1}]

    async def test_closing_ends_iteration(self, bus: BroadcastBackend, channel: str) -> None:
        received, first = [], asyncio.Event()
        async with bus.broadcaster.subscribe(channel) as subscription:
            await bus.broadcaster.publish(channel, {"n": 1})

            async def iterate() -> None:
                async for message in subscription:
                    received.append(message)
                    first.set()

            reader = asyncio.create_task(iterate())
            await asyncio.wait_for(first.wait(), 5)
            await bus.broadcaster.close()
            await asyncio.wait_for(reader, 5)
        assert received == [{"n": 1}]

    async def test_a_message_must_be_json(self, bus: BroadcastBackend, channel: str) -> None:
        with pytest.raises(TypeError):
            await bus.broadcaster.publish(channel, {"when": object()})


class TestCreateBroadcaster:
    async def test_inline_is_local(self) -> None:
        assert isinstance(create_broadcaster("inline"), LocalBroadcaster)

    async def test_a_redis_url_is_redis(self, redis_url: str) -> None:
        broadcaster = create_broadcaster(redis_url)
        try:
            assert isinstance(broadcaster, RedisBroadcaster)
        finally:
            await broadcaster.close()


async def test_redis_databases_do_not_hear_each_other(redis_url: str, channel: str) -> None:
    """Pub/sub is server-wide in Redis; deployments on `/1` and `/2` must stay apart."""
    base = redis_url.rsplit("/", 1)[0]
    first, second = RedisBroadcaster(f"{base}/1"), RedisBroadcaster(f"{base}/2")
    same_db = RedisBroadcaster(f"{base}/1")
    try:
        async with first.subscribe(channel) as mine, second.subscribe(channel) as theirs:
            await same_db.publish(channel, {"for": "db1"})
            assert await mine.get(timeout=5) == {"for": "db1"}
            assert await theirs.get(timeout=0.3) is None
    finally:
        for broadcaster in (first, second, same_db):
            await broadcaster.close()
