"""Health of registered services: each is checked every SERVICE_HEALTH_INTERVAL_MS, what the
check saw is recorded, and a change of status is published as `service.health.changed`.

One poller acts per cluster (a role lock); the others stand by. A registration or a change of
a service's URL wakes the acting poller, so a new service is checked at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog

from apphub.automation.ingress import store_events
from apphub.automation.leadership import while_leading
from apphub.bus import Broadcaster
from apphub.bus.frames import CONTROL_CHANNEL
from apphub.domain.base import iso_ms, utc_now
from apphub.domain.events import EventEnvelope
from apphub.domain.services import (
    RESPONSE_TEXT_LIMIT,
    HealthReading,
    Service,
    classify_health,
    service_url,
)
from apphub.engine.runtimes.base import elapsed_ms
from apphub.engine.service_calls import read_limited
from apphub.store import services as service_store
from apphub.store.database import Database

log = structlog.get_logger(__name__)

ROLE = "service-health"
SOURCE = "apphub.services"
HEALTH_CHANGED = "service.health.changed"
SERVICES_CHANGED = "services-changed"
"""The control message that wakes the acting poller."""
CHECKS_AT_ONCE = 20

EventSink = Callable[[Sequence[Any]], None]


async def read_health(
    client: httpx.AsyncClient, service: Service, timeout_s: float
) -> HealthReading:
    """One GET of the service's health path, bounded by `timeout_s` in all."""
    started = time.monotonic()
    try:
        url = service_url(service.base_url, service.health_path)
        async with asyncio.timeout(timeout_s):
            async with client.stream("GET", url) as response:
                content, _ = await read_limited(response, RESPONSE_TEXT_LIMIT)
    except TimeoutError:
        error = f"no answer within {timeout_s * 1000:g} ms"
        return HealthReading(None, error=error, latency_ms=elapsed_ms(started))
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as failure:
        # One service's unusable address fails its own check, never the whole poll.
        error = str(failure) or type(failure).__name__
        return HealthReading(None, error=error, latency_ms=elapsed_ms(started))
    body = content.decode("utf-8", errors="replace")
    return HealthReading(response.status_code, body=body, latency_ms=elapsed_ms(started))


async def check_services(
    database: Database,
    client: httpx.AsyncClient,
    services: Sequence[Service],
    timeout_s: float,
    events: EventSink,
) -> None:
    """Check `services` at once, record what each check saw in one transaction, and publish
    one event per service whose status changed."""
    if not services:
        return
    limit = asyncio.Semaphore(CHECKS_AT_ONCE)

    async def bounded(service: Service) -> HealthReading:
        async with limit:
            return await read_health(client, service, timeout_s)

    readings = await asyncio.gather(*(bounded(service) for service in services))
    now = utc_now()
    rows = [
        _health_row(service, reading, now)
        for service, reading in zip(services, readings, strict=True)
    ]
    async with database.write() as connection:
        before = await service_store.record_health(connection, rows)
        changed = [
            _changed_event(service, before[service.id], row)
            for service, row in zip(services, rows, strict=True)
            if service.id in before and before[service.id] != row["status"]
        ]
        stored = await store_events(connection, changed, now)
    events(stored)
    for event in changed:
        log.info("service health changed", **event.payload)


def _health_row(service: Service, reading: HealthReading, now: datetime) -> dict[str, Any]:
    status, message = classify_health(reading)
    return {
        "id": service.id,
        "base_url": service.base_url,
        "health_path": service.health_path,
        "status": status,
        "status_message": message,
        "latency_ms": reading.latency_ms,
        "last_checked_at": now,
    }


def _changed_event(service: Service, previous: str, row: dict[str, Any]) -> EventEnvelope:
    payload = {
        "serviceId": service.id,
        "slug": service.slug,
        "previousStatus": previous,
        "status": row["status"],
        "message": row["status_message"],
        "latencyMs": row["latency_ms"],
        "checkedAt": iso_ms(row["last_checked_at"]),
    }
    return EventEnvelope.model_validate(
        {"type": HEALTH_CHANGED, "source": SOURCE, "payload": payload}
    )


class HealthPoller:
    """Checks every service when it is due; sleeps until the next is due, or until woken."""

    def __init__(
        self,
        database: Database,
        broadcaster: Broadcaster,
        events: EventSink,
        *,
        interval_s: float,
        timeout_s: float,
        standby_check_s: float = 5.0,
    ) -> None:
        self.database = database
        self.broadcaster = broadcaster
        self.events = events
        self.interval = timedelta(seconds=interval_s)
        self.timeout_s = timeout_s
        self.standby_check_s = standby_check_s
        self.acting = False
        """Whether this poller holds the cluster's role now."""
        self._wake = asyncio.Event()

    async def run(self) -> None:
        await while_leading(self.database, ROLE, self._act, check_s=self.standby_check_s)

    async def poll_once(self, client: httpx.AsyncClient) -> float:
        """Check the services that are due; returns the seconds until the next one is."""
        now = utc_now()
        async with self.database.read() as connection:
            services = await service_store.list_services(connection)
        due = [service for service in services if self._due_at(service) <= now]
        await check_services(self.database, client, due, self.timeout_s, self.events)
        waiting = [self._due_at(service) for service in services if self._due_at(service) > now]
        next_due = min([*waiting, now + self.interval])
        return max(0.0, (next_due - utc_now()).total_seconds())

    def _due_at(self, service: Service) -> datetime:
        if service.last_checked_at is None:
            return datetime.min.replace(tzinfo=utc_now().tzinfo)
        return service.last_checked_at + self.interval

    async def _act(self) -> None:
        listener = asyncio.create_task(self._listen())
        self.acting = True
        try:
            async with httpx.AsyncClient(timeout=None, follow_redirects=False) as client:
                while True:
                    self._wake.clear()
                    try:
                        delay = await self.poll_once(client)
                    except Exception:
                        log.exception("health poll failed")
                        delay = self.interval.total_seconds()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
        finally:
            self.acting = False
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self) -> None:
        async with self.broadcaster.subscribe(CONTROL_CHANNEL) as messages:
            async for message in messages:
                if message.get("type") == SERVICES_CHANGED:
                    self._wake.set()
