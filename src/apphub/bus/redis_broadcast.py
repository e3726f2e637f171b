"""RedisBroadcaster: the scaled-mode Broadcaster on Redis pub/sub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from apphub.bus.broadcast import BUFFER_SIZE, Inbox, Message, normalized

log = structlog.get_logger(__name__)

PREFIX = "apphub:"
"""Channels are named `apphub:<db>:<channel>`: Redis pub/sub ignores database numbers, and two
deployments on one Redis server (`/1` and `/2`) must not hear each other's frames."""
SUBSCRIBE_TIMEOUT_S = 10.0
RECONNECT_DELAY_S = 1.0


class RedisBroadcaster:
    """Fans out through Redis to every process; one pub/sub connection per instance.

    Local subscribers share that connection: the first subscriber of a channel subscribes at
    Redis, the last one to leave unsubscribes, and a reader task routes each message to the
    channel's inboxes. Publishing uses the client's pool (one connection unless publishes
    overlap). Messages published while the connection is down are lost: subscribers that
    must not miss any resume from the events table.
    """

    def __init__(self, redis_url: str, *, buffer_size: int = BUFFER_SIZE) -> None:
        self._redis = Redis.from_url(redis_url)
        database = self._redis.connection_pool.connection_kwargs.get("db", 0)
        self._prefix = f"{PREFIX}{database}:"
        self._pubsub = self._redis.pubsub()
        self._buffer_size = buffer_size
        self._inboxes: dict[str, set[Inbox]] = {}
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._membership = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, channel: str, message: Message) -> None:
        await self._redis.publish(self._prefix + channel, normalized(message))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Inbox]:
        """Yields once Redis confirmed the subscription, so a publish after entering arrives."""
        inbox = Inbox(self._buffer_size)
        await self._join(channel, inbox)
        try:
            yield inbox
        finally:
            inbox.close()
            await self._leave(channel, inbox)

    async def close(self) -> None:
        """End every subscription's iteration and close both connections."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for confirmed in self._confirmations.values():
            if not confirmed.done():
                confirmed.set_exception(RuntimeError("the broadcaster closed while subscribing"))
        for inboxes in self._inboxes.values():
            for inbox in inboxes:
                inbox.close()
        self._inboxes.clear()
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        await self._redis.aclose()

    async def _join(self, channel: str, inbox: Inbox) -> None:
        if self._closed:
            raise RuntimeError("the broadcaster is closed")
        async with self._membership:
            if channel in self._inboxes:
                self._inboxes[channel].add(inbox)
                return
            self._inboxes[channel] = {inbox}
            try:
                await self._subscribe_at_redis(channel)
            except BaseException:
                del self._inboxes[channel]
                raise

    async def _leave(self, channel: str, inbox: Inbox) -> None:
        async with self._membership:
            inboxes = self._inboxes.get(channel, set())
            inboxes.discard(inbox)
            if inboxes or self._closed:
                return
            self._inboxes.pop(channel, None)
            try:
                await self._pubsub.unsubscribe(self._prefix + channel)
            except (RedisError, OSError):
                log.warning("broadcast unsubscribe failed", channel=channel, exc_info=True)

    async def _subscribe_at_redis(self, channel: str) -> None:
        name = (self._prefix + channel).encode()
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[name] = confirmed
        try:
            await self._pubsub.subscribe(name)
            self._start_reader()
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await confirmed
        finally:
            self._confirmations.pop(name, None)

    def _start_reader(self) -> None:
        # Started after the first SUBSCRIBE: before it the pub/sub object has no connection.
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="broadcast-reader")

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except (RedisError, OSError):
                log.warning("broadcast connection lost, reconnecting", exc_info=True)
                await asyncio.sleep(RECONNECT_DELAY_S)
                continue
            if message is not None:
                self._route(message)

    def _route(self, message: dict[str, Any]) -> None:
        name: bytes = message["channel"]
        if message["type"] == "subscribe":
            confirmed = self._confirmations.get(name)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif message["type"] == "message":
            self._deliver(name.decode()[len(self._prefix) :], message["data"])

    def _deliver(self, channel: str, data: bytes) -> None:
        inboxes = self._inboxes.get(channel)
        payload = _decoded(data) if inboxes else None
        if inboxes and payload is not None:
            for inbox in inboxes:
                inbox.put(payload)


def _decoded(data: bytes) -> Message | None:
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        log.warning("broadcast message is not a JSON object", data=data[:200])
        return None
    return payload
