"""Build the FastAPI application: state, routers, error handlers, an OpenAPI that says 400."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

import apphub
from apphub.api.errors import install_error_handlers
from apphub.api.routes import (
    admin,
    assets,
    automation,
    events,
    health,
    jobs,
    observability,
    retries,
    runs,
    saved_views,
    schedules,
    triggers,
    workflows,
    ws,
)
from apphub.api.routes import services as service_routes
from apphub.api.state import AppState
from apphub.automation.ingress_worker import IngressWorker
from apphub.engine import registry
from apphub.engine.services import EngineServices
from apphub.engine.worker import Worker
from apphub.sdk import Definitions
from apphub.security import OperatorToken, Principal, TokenRegistry, ensure_token_file
from apphub.settings import Settings
from apphub.store.database import Database
from apphub.store.migrate import migrate

log = structlog.get_logger(__name__)


def child_publisher_env(settings: Settings, public_url: str) -> dict[str, str]:
    """Children of an embedded server publish events back to it over HTTP (proxy mode)."""
    env = {"APPHUB_EVENT_PROXY_URL": public_url}
    token = publisher_token(settings)
    if token:
        env["APPHUB_TOKEN"] = token
    return env


def publisher_token(settings: Settings) -> str | None:
    if settings.auth_disabled:
        return None
    if settings.operator_tokens is not None:
        allowed = [t for t in settings.operator_tokens if t.principal.allows("events:publish")]
        return allowed[0].token if allowed else None
    return ensure_token_file(settings.token_file)


def token_registry(settings: Settings) -> TokenRegistry | None:
    """Configured tokens; else this data dir's operator token, created on first start."""
    if settings.auth_disabled:
        return None
    if settings.operator_tokens is not None:
        return TokenRegistry(settings.operator_tokens)
    token = ensure_token_file(settings.token_file)
    return TokenRegistry([OperatorToken(token, Principal("operator", None))])


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    workers: bool = False,
    definitions: Definitions | None = None,
    public_url: str | None = None,
) -> FastAPI:
    """The app; `workers=True` also runs the orchestrator in this process (embedded mode).

    `definitions` (from `--defs`) are registered at start. `public_url` is where this server
    listens, so job child processes can publish events back to it. A `database` passed in is
    used as-is and left open (tests share one).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = EngineServices.open(settings, database)
        worker_task: asyncio.Task[None] | None = None
        try:
            await migrate(services.database)
            if definitions is not None:
                await register_definitions(
                    services.database, definitions, events=services.ingress.process_soon
                )
            app.state.apphub = AppState(settings, services, token_registry(settings))
            if public_url and settings.inline:
                services.child_env = child_publisher_env(settings, public_url)
            if workers:
                worker = Worker(services, embedded=_embedded(settings, services))
                ingress = IngressWorker(settings, services.database, services.ingress)
                materializer = services.materializer()
                automation = (
                    services.trigger_worker().run(),
                    services.scheduler().run(),
                    services.health_poller().run(),
                )
                worker_task = asyncio.create_task(
                    _run_all(worker.run(), ingress.run(), materializer.run(), *automation),
                    name="apphub-workers",
                )
            log.info(
                "apphub ready",
                database=services.database.dialect,
                workers=workers,
                queues="inline" if settings.inline else "redis",
            )
            yield
        finally:
            if worker_task is not None:
                worker_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker_task
            await services.close()

    app = FastAPI(
        title="apphub",
        version=apphub.__version__,
        description="Jobs, DAG workflows and data assets, kept fresh by events.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    routers = (
        health,
        jobs,
        workflows,
        runs,
        assets,
        automation,
        events,
        saved_views,
        service_routes,
        observability,
        admin,
        triggers,
        schedules,
        retries,
        ws,
    )
    for module in routers:
        app.include_router(module.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _run_all(*loops: Coroutine[Any, Any, None]) -> None:
    async with asyncio.TaskGroup() as group:
        for loop in loops:
            group.create_task(loop)


async def register_definitions(
    database: Database, definitions: Definitions, *, events: registry.EventSink | None = None
) -> None:
    """Create or update what the definitions module declares; unchanged ones are left alone."""
    for job in definitions.jobs:
        outcome = await registry.upsert_job(database, job)
        log.info("job definition", slug=job.slug, outcome=outcome)
    for workflow in definitions.workflows:
        outcome = await registry.upsert_workflow(database, workflow, events=events)
        log.info("workflow definition", slug=workflow.slug, outcome=outcome)


def _embedded(settings: Settings, services: EngineServices) -> bool:
    """One process owns a SQLite database with in-process queues: its old claims are dead."""
    return settings.inline and services.database.dialect == "sqlite"


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents 422 for bad input; this API answers 400 with its error body."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": "Bad input: the message names the field and the rule",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    },
                }
    components = schema.get("components", {}).get("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    app.openapi_schema = schema
    return schema
