"""Publishing events from anywhere: in this process, through Redis, or over HTTP.

`create_event_publisher()` picks the mode from the environment:
- `APPHUB_EVENT_PROXY_URL` set → **proxy**: `POST <url>/events` with `APPHUB_TOKEN`;
- `APPHUB_EVENTS_MODE=inline`, or `REDIS_URL` unset/`inline` → **inline**: handed to the event
  ingress running in this process (a server or worker registers it);
- otherwise → **queue**: onto the saq queue `APPHUB_EVENT_QUEUE_NAME` for `apphub events`.

Every mode validates the envelope first and adds `metadata.__apphubWorkflow` from the
current job's context when the publisher did not set it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

import httpx

from apphub.domain.events import EventEnvelope, with_workflow_context
from apphub.runtime import get_workflow_event_context

DEFAULT_EVENT_QUEUE = "apphub_event_ingress_queue"
LocalIngest = Callable[[Sequence[EventEnvelope]], Coroutine[Any, Any, Any]]


class EventPublishError(RuntimeError):
    """The event could not be handed over; the message says why."""


class EventPublisher(Protocol):
    async def publish(self, event: Mapping[str, Any] | EventEnvelope) -> EventEnvelope: ...

    async def close(self) -> None: ...


def prepare(event: Mapping[str, Any] | EventEnvelope) -> EventEnvelope:
    """Validate (a bad field raises pydantic's ValidationError naming it) and add context."""
    envelope = event if isinstance(event, EventEnvelope) else EventEnvelope.model_validate(event)
    return with_workflow_context(envelope, get_workflow_event_context())


# --- inline ------------------------------------------------------------------------------------

_local: tuple[asyncio.AbstractEventLoop, LocalIngest] | None = None


def register_local_ingest(ingest: LocalIngest) -> None:
    """Called by the process that runs an event ingress, on its event loop."""
    global _local
    _local = (asyncio.get_running_loop(), ingest)


def unregister_local_ingest() -> None:
    global _local
    _local = None


class InlinePublisher:
    async def publish(self, event: Mapping[str, Any] | EventEnvelope) -> EventEnvelope:
        envelope = prepare(event)
        if _local is None:
            raise EventPublishError(
                "no event ingress runs in this process: set APPHUB_EVENT_PROXY_URL, "
                "or REDIS_URL for the queue"
            )
        loop, ingest = _local
        if loop is asyncio.get_running_loop():
            await ingest([envelope])
        else:  # a job's thread or its own loop: hand over to the ingress's loop
            future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
                ingest([envelope]), loop
            )
            await asyncio.wrap_future(future)
        return envelope

    async def close(self) -> None:
        return None


# --- queue -------------------------------------------------------------------------------------


class QueuePublisher:
    def __init__(self, redis_url: str, queue_name: str = DEFAULT_EVENT_QUEUE) -> None:
        from apphub.queue import create_queue

        self._queue = create_queue(queue_name, redis_url)

    async def publish(self, event: Mapping[str, Any] | EventEnvelope) -> EventEnvelope:
        envelope = prepare(event)
        item = json.dumps({"event": envelope.model_dump(mode="json")})
        await self._queue.enqueue(item, key=envelope.id)
        return envelope

    async def close(self) -> None:
        await self._queue.close()


# --- proxy -------------------------------------------------------------------------------------


class ProxyPublisher:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=30)

    async def publish(self, event: Mapping[str, Any] | EventEnvelope) -> EventEnvelope:
        envelope = prepare(event)
        try:
            response = await self._client.post("/events", json=envelope.model_dump(mode="json"))
        except httpx.TransportError as error:
            raise EventPublishError(f"cannot reach {self._client.base_url}: {error}") from None
        if response.is_error:
            raise EventPublishError(f"publish refused ({response.status_code}): {response.text}")
        return envelope

    async def close(self) -> None:
        await self._client.aclose()


def create_event_publisher(env: Mapping[str, str] | None = None) -> EventPublisher:
    env = os.environ if env is None else env
    proxy = env.get("APPHUB_EVENT_PROXY_URL")
    if proxy:
        return ProxyPublisher(proxy, env.get("APPHUB_TOKEN"))
    redis_url = env.get("REDIS_URL") or "inline"
    if env.get("APPHUB_EVENTS_MODE") == "inline" or redis_url == "inline":
        return InlinePublisher()
    return QueuePublisher(redis_url, env.get("APPHUB_EVENT_QUEUE_NAME") or DEFAULT_EVENT_QUEUE)


def publish_event(event: Mapping[str, Any] | EventEnvelope) -> EventEnvelope:
    """Publish from synchronous code (a job's handler); async code awaits `publish` instead."""
    envelope = prepare(event)  # here, in the caller's context, so the job's context is kept

    async def send() -> EventEnvelope:
        publisher = create_event_publisher()
        try:
            return await publisher.publish(envelope)
        finally:
            await publisher.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(send())
    raise EventPublishError("publish_event() is for synchronous code; await publish() instead")


class BusPublishing:
    """`JobContext.publisher`: events from job code go through `create_event_publisher()`."""

    def publish(self, event: dict[str, Any]) -> dict[str, Any]:
        return publish_event(event).model_dump(mode="json")

    async def publish_async(self, event: dict[str, Any]) -> dict[str, Any]:
        publisher = create_event_publisher()
        try:
            envelope = await publisher.publish(event)
        finally:
            await publisher.close()
        return envelope.model_dump(mode="json")
