"""Registering, changing and removing services; a change wakes the acting health poller."""

from __future__ import annotations

from typing import Any

import httpx

from apphub.bus.frames import CONTROL_CHANNEL
from apphub.domain.base import utc_now
from apphub.domain.errors import NotFoundError
from apphub.domain.services import Service, ServiceSpec
from apphub.engine.service_health import SERVICES_CHANGED, check_services
from apphub.engine.services import EngineServices
from apphub.store import services as service_store

UNCHECKED = {
    "status": "unknown",
    "status_message": None,
    "last_checked_at": None,
    "latency_ms": None,
}
"""A service whose address changed is unknown again until its next check, which is at once."""


async def create_service(services: EngineServices, spec: ServiceSpec) -> Service:
    async with services.database.write() as connection:
        service = await service_store.insert_service(connection, spec, utc_now())
    await _wake_poller(services)
    return service


async def update_service(services: EngineServices, slug: str, changes: dict[str, Any]) -> Service:
    """Apply a partial update; the merged service must pass every rule a new one does."""
    async with services.database.write() as connection:
        current = await service_store.get_service(connection, slug, lock=True)
        if current is None:
            raise NotFoundError("service not found")
        fields = set(ServiceSpec.model_fields) - {"slug"}
        merged = current.model_dump(mode="json", include=fields) | {"slug": current.slug}
        spec = ServiceSpec.model_validate(merged | changes)
        values = spec.model_dump(mode="json", exclude={"slug"}, by_alias=False)
        values["updated_at"] = utc_now()
        moved = (spec.base_url, spec.health_path) != (current.base_url, current.health_path)
        if moved:
            values |= UNCHECKED
        updated = await service_store.update_service(connection, slug, values)
    assert updated is not None
    if moved:
        await _wake_poller(services)
    return updated


async def delete_service(services: EngineServices, slug: str) -> None:
    async with services.database.write() as connection:
        if not await service_store.delete_service(connection, slug):
            raise NotFoundError("service not found")


async def check_now(services: EngineServices, slug: str) -> Service:
    """Check one service's health now (outside the poller's turn) and record it."""
    async with services.database.read() as connection:
        service = await service_store.get_service(connection, slug)
    if service is None:
        raise NotFoundError("service not found")
    timeout_s = services.settings.service_health_timeout_ms / 1000
    async with httpx.AsyncClient(timeout=None, follow_redirects=False) as client:
        await check_services(
            services.database, client, [service], timeout_s, services.ingress.process_soon
        )
    async with services.database.read() as connection:
        checked = await service_store.get_service(connection, slug)
    if checked is None:
        raise NotFoundError("service not found")
    return checked


async def _wake_poller(services: EngineServices) -> None:
    await services.broadcaster.publish(CONTROL_CHANNEL, {"type": SERVICES_CHANGED})
