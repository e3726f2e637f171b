"""One acting process per role: advisory locks on PostgreSQL, the one process on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from apphub.automation.leadership import while_leading
from apphub.store.database import Database, open_database
from apphub.store.leader import RoleLock, lock_key


def test_keys_are_stable_and_distinct() -> None:
    assert lock_key("scheduler") == lock_key("scheduler")
    assert lock_key("scheduler") != lock_key("service-health")
    assert -(2**63) <= lock_key("scheduler") < 2**63


async def test_one_holder_per_role(database: Database) -> None:
    other = open_database(str(database.engine.url.render_as_string(hide_password=False)))
    first, second = RoleLock(database, "role-a"), RoleLock(other, "role-a")
    unrelated = RoleLock(other, "role-b")
    try:
        assert await first.try_acquire()
        if database.is_postgres:
            assert not await second.try_acquire()
            assert await unrelated.try_acquire()  # roles are independent
            await first.release()
            assert await second.try_acquire()
            assert not await first.try_acquire()
        else:  # one process owns a SQLite database: it always leads
            assert await second.try_acquire()
        assert await second.still_held()
    finally:
        for lock in (first, second, unrelated):
            await lock.release()
        await other.dispose()


async def test_a_dead_session_frees_the_role(database: Database) -> None:
    if not database.is_postgres:
        lock = RoleLock(database, "role-c")
        assert await lock.try_acquire()
        assert await lock.still_held()
        return
    other = open_database(str(database.engine.url.render_as_string(hide_password=False)))
    holder, standby = RoleLock(database, "role-c"), RoleLock(other, "role-c")
    try:
        assert await holder.try_acquire()
        assert not await standby.try_acquire()
        async with database.write() as connection:  # the holder's session is killed
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted "
                    "AND objid::bigint = (:key & 4294967295)"
                ),
                {"key": holder.key},
            )
        assert not await holder.still_held()
        assert await standby.try_acquire()
    finally:
        await holder.release()
        await standby.release()
        await other.dispose()


async def test_while_leading_runs_work_in_one_process_only(database: Database) -> None:
    other = open_database(str(database.engine.url.render_as_string(hide_password=False)))
    acting: list[str] = []

    def worker(name: str) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            acting.append(name)
            await asyncio.Event().wait()

        return work

    tasks = [
        asyncio.create_task(while_leading(db, "role-d", worker(name), check_s=0.1))
        for name, db in (("first", database), ("second", other))
    ]
    try:
        await asyncio.sleep(0.5)
        expected = 1 if database.is_postgres else 2
        assert len(acting) == expected, acting
        if database.is_postgres:
            tasks[acting[0] != "first"].cancel()  # the leader stops; the standby takes over
            await asyncio.sleep(0.5)
            assert len(acting) == 2, acting
            assert acting[0] != acting[1], acting
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await other.dispose()
