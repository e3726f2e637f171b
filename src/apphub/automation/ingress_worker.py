"""The ingress process (`apphub events`, embedded in `apphub serve`).

It drains the event queue that queue-mode publishers fill, replays deferred (rate-limited)
events once their source's pause is over, processes events a crash left unprocessed, and
prunes events past `APPHUB_EVENT_RETENTION_DAYS`. Each loop step is a plain method.
"""

from __future__ import annotations

import asyncio
import json

import structlog
from pydantic import ValidationError

from apphub.automation.batching import Batcher
from apphub.automation.ingress import EventIngress
from apphub.automation.loops import every
from apphub.domain.events import EventEnvelope
from apphub.queue import create_queue
from apphub.settings import Settings
from apphub.store.database import Database

log = structlog.get_logger(__name__)

PRUNE_INTERVAL_S = 3600.0


class IngressWorker:
    def __init__(self, settings: Settings, database: Database, ingress: EventIngress) -> None:
        self.settings = settings
        self.database = database
        self.ingress = ingress
        self._batcher: Batcher[EventEnvelope] = Batcher(self._ingest)

    async def run(self) -> None:
        await self.repair_once()
        async with asyncio.TaskGroup() as group:
            if not self.settings.inline:
                group.create_task(self._consume())
            interval = self.settings.reconcile_interval_ms / 1000
            group.create_task(every(interval, self.repair_once, "ingress repair"))
            group.create_task(every(PRUNE_INTERVAL_S, self.prune_once, "event retention"))

    async def handle(self, item: str) -> None:
        """One queue message: `{"event": envelope}` from a queue-mode publisher."""
        try:
            envelope = EventEnvelope.model_validate(json.loads(item)["event"])
        except (ValueError, KeyError, TypeError, ValidationError) as error:
            log.warning("event refused", error=str(error)[:500])
            return
        await self._batcher.submit(envelope)

    async def _ingest(self, envelopes: list[EventEnvelope]) -> None:
        await self.ingress.ingest(envelopes)

    async def repair_once(self) -> int:
        deferred = await self.ingress.process_due_deferred()
        recovered = await self.ingress.recover_unprocessed()
        return deferred + recovered

    async def prune_once(self) -> int:
        removed = await self.ingress.prune(self.settings.event_retention_days)
        if removed:
            log.info("pruned old events", removed=removed)
        return removed

    async def _consume(self) -> None:
        queue = create_queue(self.settings.event_queue_name, self.settings.redis_url)
        try:
            await queue.consume(self.handle, concurrency=self.settings.event_ingress_concurrency)
        finally:
            await queue.close()
