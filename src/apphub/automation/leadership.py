"""Act only while holding a role: one health poller, one scheduler per cluster.

A process that does not hold the role stands by and tries again every few seconds; one that
loses it (its lock session ended) stops acting at once and goes back to standing by.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from apphub.store.database import Database
from apphub.store.leader import RoleLock

log = structlog.get_logger(__name__)

STANDBY_RETRY_S = 5.0
"""How often a standby asks for the role, and how often the leader checks it still has it."""


async def while_leading(
    database: Database,
    role: str,
    work: Callable[[], Awaitable[None]],
    *,
    check_s: float = STANDBY_RETRY_S,
) -> None:
    """Run `work` whenever this process holds `role`, until cancelled."""
    lock = RoleLock(database, role)
    try:
        while True:
            if await _acquire(lock):
                log.info("acting for the cluster", role=role)
                await _act(lock, work, check_s)
            await asyncio.sleep(check_s)
    finally:
        with contextlib.suppress(Exception):
            await lock.release()


async def _acquire(lock: RoleLock) -> bool:
    try:
        return await lock.try_acquire()
    except Exception:
        log.exception("could not ask for a role", role=lock.role)
        return False


async def _act(lock: RoleLock, work: Callable[[], Awaitable[None]], check_s: float) -> None:
    """Run `work` until it ends or the role is lost; a failure is logged, then retried."""
    task = asyncio.ensure_future(work())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=check_s)
            if not task.done() and not await lock.still_held():
                log.warning("lost the role; standing by", role=lock.role)
                return
        if task.exception() is not None:
            log.error("role work failed; will retry", role=lock.role, error=repr(task.exception()))
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await lock.release()
