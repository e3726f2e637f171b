"""Live frames for `/ws` (`workflow.run.<status>`, `job.run.<status>`) and worker control messages.

Frames are published after the transaction that caused them commits, in order, by a
background task, so a slow broadcaster never sits on the orchestrator's hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog

from apphub.bus.broadcast import Broadcaster
from apphub.domain.base import iso_ms, utc_now

log = structlog.get_logger(__name__)

FRAMES_CHANNEL = "frames"
CONTROL_CHANNEL = "control"


def frame(frame_type: str, data: Any) -> dict[str, Any]:
    return {"type": frame_type, "data": data, "emittedAt": iso_ms(utc_now())}


class FramePublisher:
    """Publishes frames in order, off the caller's path; `close()` sends what is left."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self._broadcaster = broadcaster
        self._pending: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def publish(self, frames: Iterable[dict[str, Any]]) -> None:
        for item in frames:
            self._pending.put_nowait(item)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while not self._pending.empty():
            item = self._pending.get_nowait()
            try:
                await self._broadcaster.publish(FRAMES_CHANNEL, item)
            except Exception:  # a lost frame must not stop the ones after it
                log.exception("frame publish failed", frame_type=item.get("type"))

    async def close(self) -> None:
        if self._task is not None:
            await self._task
