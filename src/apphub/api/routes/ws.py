"""`/ws`: live frames, filtered by topic; `?after=<eventId>` first replays stored events.

The subscription opens before the replay reads the log, and live frames of events the
replay already sent are skipped, so switching from replay to live loses and repeats nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from fnmatch import fnmatchcase
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from apphub.automation.ingress import event_frames
from apphub.bus.frames import FRAMES_CHANNEL
from apphub.domain.base import iso_ms, utc_now
from apphub.store import events as event_store
from apphub.store.database import Database

router = APIRouter()
REPLAY_BATCH = 500


def topic_filter(topics: str | None) -> list[str]:
    return [topic.strip() for topic in (topics or "").split(",") if topic.strip()]


def wanted(frame_type: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatchcase(frame_type, pattern) for pattern in patterns)


@router.websocket("/ws")
async def live_frames(
    websocket: WebSocket, topics: str | None = None, after: str | None = None
) -> None:
    patterns = topic_filter(topics)
    services = websocket.app.state.apphub.services
    await websocket.accept()
    async with services.broadcaster.subscribe(FRAMES_CHANNEL) as frames:
        await websocket.send_json({"type": "connection.ack", "data": {"now": iso_ms(utc_now())}})
        replayed: set[int] = set()
        if after:
            replayed = await _replay(websocket, services.database, after, patterns)
        forward = asyncio.create_task(_forward(websocket, frames, patterns, replayed))
        try:
            await _answer_pings(websocket)
        except WebSocketDisconnect:
            pass
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await forward


async def _replay(
    websocket: WebSocket, database: Database, after: str, patterns: list[str]
) -> set[int]:
    async with database.read() as connection:
        start = await event_store.by_id(connection, after)
    if start is None:
        await websocket.send_json(
            {"type": "error", "data": {"message": f"after: no stored event has id {after!r}"}}
        )
        return set()
    sent: set[int] = set()
    seq = start.seq
    while True:
        async with database.read() as connection:
            rows = await event_store.after_seq(connection, seq, REPLAY_BATCH)
        for row in rows:
            for item in event_frames(row):
                if wanted(item["type"], patterns):
                    await websocket.send_json(item)
            sent.add(row.seq)
            seq = row.seq
        if len(rows) < REPLAY_BATCH:
            return sent


async def _forward(
    websocket: WebSocket, frames: Any, patterns: list[str], replayed: set[int]
) -> None:
    async for frame in frames:
        if frame.get("seq") in replayed:
            continue
        if wanted(str(frame.get("type", "")), patterns):
            await websocket.send_json(frame)


async def _answer_pings(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive_text()
        if message.strip().lower() == "ping":
            await websocket.send_json({"type": "pong"})
