"""What every request can reach: settings, the engine services, the token registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from apphub.engine.services import EngineServices
from apphub.security import TokenRegistry
from apphub.settings import Settings
from apphub.store.database import Database


@dataclass
class AppState:
    settings: Settings
    services: EngineServices
    tokens: TokenRegistry | None
    """None when `APPHUB_AUTH_DISABLED=1`."""

    @property
    def database(self) -> Database:
        return self.services.database


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.apphub
    return state


def database(request: Request) -> Database:
    return app_state(request).database


def services(request: Request) -> EngineServices:
    return app_state(request).services


State = Annotated[AppState, Depends(app_state)]
Db = Annotated[Database, Depends(database)]
Services = Annotated[EngineServices, Depends(services)]
