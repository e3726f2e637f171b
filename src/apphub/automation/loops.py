"""The one way a long-lived process repeats a step: sleep, run it, log a failure, go on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def every(seconds: float, step: Callable[[], Awaitable[Any]], name: str) -> None:
    """Run `step` every `seconds` until cancelled; a step that raises is logged and retried."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except Exception:
            log.exception("loop step failed", loop=name)
