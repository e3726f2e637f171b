"""The Broadcaster seam: fan-out of small JSON messages to every subscriber in the cluster.

Used for WebSocket frames and cancel signals. Delivery is best effort by design: a subscriber
that must not miss anything resumes from the events table, so a slow subscriber loses its
oldest messages rather than ever making a publisher wait.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

BUFFER_SIZE = 10_000
"""Messages a subscription holds before it drops its oldest."""

Message = dict[str, Any]


class Subscription(Protocol):
    """Messages of one channel published after subscribing, in publish order.

    Messages are shared by the subscribers of a process: treat them as read-only.
    """

    @property
    def dropped(self) -> int:
        """Messages dropped because this subscription's buffer was full."""
        ...

    async def get(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        """The next message, or None after `timeout` seconds or once the broadcaster closed."""
        ...

    def __aiter__(self) -> AsyncIterator[Message]:
        """Iterate until the broadcaster closes."""
        ...


class Broadcaster(Protocol):
    """Publish to a channel; every current subscriber, in any process, receives the message."""

    async def publish(self, channel: str, message: Message) -> None: ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Subscription]:
        """Subscribed once entered: anything published after that is received."""
        ...

    async def close(self) -> None: ...


class Inbox:
    """A subscription's bounded buffer: putting never waits, overflow drops the oldest."""

    def __init__(self, capacity: int = BUFFER_SIZE) -> None:
        self._messages: deque[Message] = deque(maxlen=capacity)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def put(self, message: Message) -> None:
        if self._closed:
            return
        if len(self._messages) == self._messages.maxlen:
            self.dropped += 1
        self._messages.append(message)
        self._ready.set()

    def close(self) -> None:
        """End iteration once the buffered messages are read."""
        self._closed = True
        self._ready.set()

    async def get(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                while not self._messages and not self._closed:
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            return None
        return self._messages.popleft() if self._messages else None

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> Message:
        message = await self.get()
        if message is None:
            raise StopAsyncIteration
        return message


def normalized(message: Message) -> str:
    """The JSON text of `message`: both implementations send this, so both reject the same."""
    return json.dumps(message, separators=(",", ":"))


class LocalBroadcaster:
    """The embedded-mode Broadcaster: subscribers in this process only."""

    def __init__(self, buffer_size: int = BUFFER_SIZE) -> None:
        self._buffer_size = buffer_size
        self._inboxes: dict[str, set[Inbox]] = {}

    async def publish(self, channel: str, message: Message) -> None:
        """Deliver a JSON copy, as Redis would: later changes by the publisher do not leak."""
        inboxes = self._inboxes.get(channel)
        copy = json.loads(normalized(message))
        for inbox in inboxes or ():
            inbox.put(copy)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Inbox]:
        inbox = Inbox(self._buffer_size)
        self._inboxes.setdefault(channel, set()).add(inbox)
        try:
            yield inbox
        finally:
            inbox.close()
            inboxes = self._inboxes.get(channel, set())
            inboxes.discard(inbox)
            if not inboxes:
                self._inboxes.pop(channel, None)

    async def close(self) -> None:
        """End every subscription's iteration."""
        for inboxes in self._inboxes.values():
            for inbox in inboxes:
                inbox.close()
        self._inboxes.clear()
