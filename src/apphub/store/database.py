"""One handle on the database: read and write transactions that mean the same on both dialects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from apphub.store.sqlite_inline import inline_connector

SQLITE_BUSY_TIMEOUT_MS = 10_000
_WRITE_OPTION = "apphub_write"


class Database:
    """Hands out connections inside a transaction; nothing else in the code opens one.

    `write()` takes the write lock up front on SQLite (`BEGIN IMMEDIATE`): a deferred
    transaction that reads and then writes can fail at once with "database is locked",
    whereas an immediate one waits its turn for up to the busy timeout. On SQLite there is
    one connection, so a caller must never open a transaction while holding another.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection, connection.begin():
            yield connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection:
            await connection.execution_options(**{_WRITE_OPTION: True})
            async with connection.begin():
                yield connection

    async def dispose(self) -> None:
        await self.engine.dispose()


def open_database(url: str, *, pool_size: int = 10) -> Database:
    """Create the engine for `url`; for a SQLite file, make its folder and tune the connection."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _open_sqlite(url)
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False
    )
    return Database(engine)


def _open_sqlite(url: str) -> Database:
    """One inline connection (see `sqlite_inline`); writers begin with BEGIN IMMEDIATE."""
    path = make_url(url).database or ":memory:"
    engine = create_async_engine(
        url,
        async_creator=inline_connector(path, SQLITE_BUSY_TIMEOUT_MS),
        pool_size=1,
        max_overflow=0,
        pool_reset_on_return=None,
    )

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        writing = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")

    return Database(engine)
