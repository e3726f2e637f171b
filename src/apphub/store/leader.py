"""One acting process per cluster for a role (health poller, scheduler): a PostgreSQL
session advisory lock, held on a connection of its own for as long as the process acts.

If the process dies, PostgreSQL ends its session and the lock with it, so a standby takes
over. SQLite is one process's database (the embedded mode), so that process always leads.
"""

from __future__ import annotations

import contextlib
import hashlib

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.store.database import Database


def lock_key(role: str) -> int:
    """A stable signed 64-bit key for `role` (advisory locks are keyed by bigint)."""
    digest = hashlib.blake2b(f"apphub:{role}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class RoleLock:
    """Take a role if nobody holds it, know whether it is still held, give it back."""

    def __init__(self, database: Database, role: str) -> None:
        self.database = database
        self.role = role
        self.key = lock_key(role)
        self._connection: AsyncConnection | None = None
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    async def try_acquire(self) -> bool:
        """True when this process holds the role now (at once; never waits for it)."""
        if not self.database.is_postgres:
            self._held = True
            return True
        if self._held:
            return await self.still_held()
        connection = await self._open()
        result = await connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
        )
        self._held = bool(result.scalar())
        if not self._held:
            await self._close()
        return self._held

    async def still_held(self) -> bool:
        """False once the lock's session is gone (the database restarted, the link broke)."""
        if not self.database.is_postgres:
            return self._held
        if not self._held or self._connection is None:
            return False
        try:
            await self._connection.execute(text("SELECT 1"))
        except (DBAPIError, OSError):
            self._held = False
            await self._close()
        return self._held

    async def release(self) -> None:
        if self._connection is not None and self._held:
            # If the session is gone, the lock went with it.
            with contextlib.suppress(DBAPIError, OSError):
                await self._connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}
                )
        self._held = False
        await self._close()

    async def _open(self) -> AsyncConnection:
        if self._connection is None:
            connection = await self.database.engine.connect()
            # No transaction stays open while the role is held: the lock is the session's.
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            self._connection = connection
        return self._connection

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except (DBAPIError, OSError):
                await connection.invalidate()
