"""What every request can reach: settings, the database, the token registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from apphub.security import TokenRegistry
from apphub.settings import Settings
from apphub.store.database import Database


@dataclass
class AppState:
    settings: Settings
    database: Database
    tokens: TokenRegistry | None
    """None when `APPHUB_AUTH_DISABLED=1`."""


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.apphub
    return state


def database(request: Request) -> Database:
    return app_state(request).database


State = Annotated[AppState, Depends(app_state)]
Db = Annotated[Database, Depends(database)]
