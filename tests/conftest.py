"""Shared fixtures: one suite, run against SQLite and PostgreSQL (and Redis where used).

PostgreSQL tests run in a database made for this session and dropped after it; SQLite tests
each get a copy of a migrated template file. With APPHUB_REQUIRE_SERVICES=1, a service that
does not answer fails the run instead of skipping its half of the suite.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.engine import make_url

from apphub.api.app import create_app
from apphub.engine.services import EngineServices
from apphub.security import OperatorToken, Principal
from apphub.settings import Settings
from apphub.store.database import Database, open_database
from apphub.store.migrate import migrate
from apphub.store.tables import metadata
from tests.services import (
    POSTGRES_ADMIN_URL,
    REDIS_URL,
    REQUIRE_SERVICES,
    answers,
    missing_services,
    redis_database_url,
)

BACKENDS = ["sqlite", "postgres"]

# Property tests judge behaviour, not speed: a loaded CI machine must not fail them.
hypothesis_settings.register_profile("apphub", deadline=None)
hypothesis_settings.load_profile("apphub")


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = missing_services()
    if missing and REQUIRE_SERVICES:
        raise pytest.UsageError(
            "APPHUB_REQUIRE_SERVICES=1 but these do not answer: " + ", ".join(missing)
        )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this session's own, migrated to head."""
    if not answers(POSTGRES_ADMIN_URL, 5432):
        pytest.skip("PostgreSQL does not answer (set APPHUB_REQUIRE_SERVICES=1 to fail instead)")
    name = f"apphub_test_{uuid.uuid4().hex[:10]}"
    admin = make_url(POSTGRES_ADMIN_URL)
    asyncio.run(_admin(admin.render_as_string(hide_password=False), f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)
    asyncio.run(_migrated(url))
    yield url
    asyncio.run(
        _admin(admin.render_as_string(hide_password=False), f'DROP DATABASE "{name}" WITH (FORCE)')
    )


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """This test process's name under pytest-xdist (`gw0`, …), or `master` without it."""
    workerinput = getattr(request.config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "master"


@pytest.fixture(scope="session")
def redis_url(worker_id: str) -> str:
    """The test Redis, in a database of this test process's own; skipped when it does not
    answer (fails when services are required)."""
    if not answers(REDIS_URL, 6379):
        pytest.skip("Redis does not answer (set APPHUB_REQUIRE_SERVICES=1 to fail instead)")
    return redis_database_url(REDIS_URL, worker_id, scaled=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "apphub.db"
    asyncio.run(_migrated(f"sqlite+aiosqlite:///{path}"))
    return path


async def _admin(url: str, statement: str) -> None:
    database = open_database(url)
    try:
        async with database.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(statement))
    finally:
        await database.dispose()


async def _migrated(url: str) -> None:
    database = open_database(url)
    try:
        await migrate(database)
    finally:
        await database.dispose()


@dataclass
class Backend:
    name: str
    url: str


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgres":
        return Backend("postgres", request.getfixturevalue("postgres_url"))
    template: Path = request.getfixturevalue("sqlite_template")
    path = tmp_path / "apphub.db"
    shutil.copy(template, path)
    return Backend("sqlite", f"sqlite+aiosqlite:///{path}")


@pytest.fixture
async def database(backend: Backend) -> AsyncIterator[Database]:
    """An empty, migrated database of the parametrized backend."""
    database = open_database(backend.url)
    if database.is_postgres:
        tables = ", ".join(table.name for table in metadata.sorted_tables)
        async with database.write() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield database
    await database.dispose()


ADMIN_TOKEN = "test-admin-token"
READER_TOKEN = "test-reader-token"
JOBS_WRITER_TOKEN = "test-jobs-writer-token"
TEST_TOKENS = (
    OperatorToken(ADMIN_TOKEN, Principal("admin", None)),
    OperatorToken(READER_TOKEN, Principal("reader", frozenset({"admin:read"}))),
    OperatorToken(JOBS_WRITER_TOKEN, Principal("jobs-writer", frozenset({"jobs:write"}))),
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Hub:
    """An app instance on a test database and an HTTP client on it (admin token)."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def services(self) -> EngineServices:
        services: EngineServices = self.app.state.apphub.services
        return services


@asynccontextmanager
async def open_hub(
    database: Database, tmp_path: Path, *, workers: bool = True, **settings: Any
) -> AsyncIterator[Hub]:
    """The app with its embedded workers (unless `workers=False`), as `make run` serves it."""
    config = Settings(
        database_url=str(database.engine.url),
        data_dir=tmp_path,
        operator_tokens=TEST_TOKENS,
        **settings,
    )
    app = create_app(config, database=database, workers=workers)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://apphub.test", headers=bearer(ADMIN_TOKEN)
        ) as client:
            yield Hub(app, client)


@pytest.fixture
async def api(database: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the ASGI app with its embedded worker, sending the admin token."""
    async with open_hub(database, tmp_path) as hub:
        yield hub.client
