"""The one way a long-lived process repeats a step (sleep, run it, log a failure, go on), and
the one way a consumer retries a database step that failed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError

log = structlog.get_logger(__name__)


async def every(seconds: float, step: Callable[[], Awaitable[Any]], name: str) -> None:
    """Run `step` every `seconds` until cancelled; a step that raises is logged and retried."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except Exception:
            log.exception("loop step failed", loop=name)


async def with_database_retries(
    step: Callable[[], Awaitable[Any]], name: str, attempts: int = 3
) -> bool:
    """Run `step`, retrying a database error with a short backoff; False (logged) when it
    kept failing, so the caller can leave the work to its durable fallback."""
    for attempt in range(1, attempts + 1):
        try:
            await step()
            return True
        except DBAPIError:
            if attempt == attempts:
                log.exception("database step failed", step=name, attempts=attempts)
                return False
            await asyncio.sleep(0.05 * 2**attempt)
    return False
