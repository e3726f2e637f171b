"""`/ws`: live frames (`workflow.run.<status>`, `job.run.<status>`, ...), filtered by topic."""

from __future__ import annotations

import asyncio
import contextlib
from fnmatch import fnmatchcase
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from apphub.domain.base import iso_ms, utc_now
from apphub.engine.frames import FRAMES_CHANNEL

router = APIRouter()


def topic_filter(topics: str | None) -> list[str]:
    return [topic.strip() for topic in (topics or "").split(",") if topic.strip()]


def wanted(frame_type: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatchcase(frame_type, pattern) for pattern in patterns)


@router.websocket("/ws")
async def live_frames(websocket: WebSocket, topics: str | None = None) -> None:
    patterns = topic_filter(topics)
    broadcaster = websocket.app.state.apphub.services.broadcaster
    await websocket.accept()
    async with broadcaster.subscribe(FRAMES_CHANNEL) as frames:
        await websocket.send_json({"type": "connection.ack", "data": {"now": iso_ms(utc_now())}})
        forward = asyncio.create_task(_forward(websocket, frames, patterns))
        try:
            await _answer_pings(websocket)
        except WebSocketDisconnect:
            pass
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await forward


async def _forward(websocket: WebSocket, frames: Any, patterns: list[str]) -> None:
    async for frame in frames:
        if wanted(str(frame.get("type", "")), patterns):
            await websocket.send_json(frame)


async def _answer_pings(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive_text()
        if message.strip().lower() == "ping":
            await websocket.send_json({"type": "pong"})
