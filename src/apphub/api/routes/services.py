"""`/services`: the registry of HTTP services that workflow steps call, with their health."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response

from apphub.api.auth import require
from apphub.api.schemas import BAD_INPUT, CONFLICT, GUARDED, NOT_FOUND, Data
from apphub.api.state import Db, Services
from apphub.domain.errors import NotFoundError
from apphub.domain.services import Service, ServicePatch, ServiceSpec
from apphub.engine import service_registry
from apphub.security import Principal
from apphub.store import services as service_store

router = APIRouter(tags=["services"])


@router.get("/services", response_model=Data[list[Service]])
async def list_services(database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        return {"data": await service_store.list_services(connection)}


@router.get("/services/{slug}", response_model=Data[Service], responses=NOT_FOUND)
async def get_service(slug: str, database: Db) -> dict[str, Any]:
    async with database.read() as connection:
        service = await service_store.get_service(connection, slug)
    if service is None:
        raise NotFoundError("service not found")
    return {"data": service}


@router.post(
    "/services",
    status_code=201,
    response_model=Data[Service],
    responses=BAD_INPUT | GUARDED | CONFLICT,
)
async def create_service(
    spec: ServiceSpec,
    services: Services,
    _: Annotated[Principal, require("services:write", "service.create")],
) -> dict[str, Any]:
    """Register a service; its status is `unknown` until its first health check, made at once."""
    return {"data": await service_registry.create_service(services, spec)}


@router.patch(
    "/services/{slug}",
    response_model=Data[Service],
    responses=BAD_INPUT | GUARDED | NOT_FOUND,
)
async def update_service(
    slug: str,
    patch: ServicePatch,
    services: Services,
    _: Annotated[Principal, require("services:write", "service.update")],
) -> dict[str, Any]:
    changes = patch.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return {"data": await service_registry.update_service(services, slug, changes)}


@router.delete("/services/{slug}", status_code=204, responses=GUARDED | NOT_FOUND)
async def delete_service(
    slug: str,
    services: Services,
    _: Annotated[Principal, require("services:write", "service.delete")],
) -> Response:
    await service_registry.delete_service(services, slug)
    return Response(status_code=204)


@router.post(
    "/services/{slug}/health-check",
    response_model=Data[Service],
    responses=GUARDED | NOT_FOUND,
)
async def check_service(
    slug: str,
    services: Services,
    _: Annotated[Principal, require("services:write", "service.check")],
) -> dict[str, Any]:
    """Check the service's health now and record it, as the poller would."""
    return {"data": await service_registry.check_now(services, slug)}
