"""Build the FastAPI application: state, routers, error handlers, an OpenAPI that says 400."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

import apphub
from apphub.api.errors import install_error_handlers
from apphub.api.routes import admin, health, jobs, workflows
from apphub.api.state import AppState
from apphub.security import OperatorToken, Principal, TokenRegistry, ensure_token_file
from apphub.settings import Settings
from apphub.store.database import Database, open_database
from apphub.store.migrate import migrate

log = structlog.get_logger(__name__)


def token_registry(settings: Settings) -> TokenRegistry | None:
    """Configured tokens; else this data dir's operator token, created on first start."""
    if settings.auth_disabled:
        return None
    if settings.operator_tokens is not None:
        return TokenRegistry(settings.operator_tokens)
    token = ensure_token_file(settings.token_file)
    return TokenRegistry([OperatorToken(token, Principal("operator", None))])


def create_app(settings: Settings, *, database: Database | None = None) -> FastAPI:
    """The app; a `database` passed in is used as-is and left open (tests share one)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = database is None
        db = open_database(settings.database_url) if database is None else database
        try:
            await migrate(db)
            app.state.apphub = AppState(settings, db, token_registry(settings))
            log.info("apphub ready", database=db.dialect, auth=not settings.auth_disabled)
            yield
        finally:
            if owned:
                await db.dispose()

    app = FastAPI(
        title="apphub",
        version=apphub.__version__,
        description="Jobs, DAG workflows and data assets, kept fresh by events.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (health, jobs, workflows, admin):
        app.include_router(module.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


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
