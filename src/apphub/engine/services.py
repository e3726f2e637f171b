"""The process-wide parts the API and the workers share: database, queues, broadcaster."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from apphub.bus import Broadcaster, create_broadcaster
from apphub.engine.frames import FramePublisher, frame
from apphub.queue import JobQueue, create_queue
from apphub.settings import Settings
from apphub.store.database import Database, open_database

WORKFLOW_QUEUE = "apphub_workflow_queue"
JOB_QUEUE = "apphub_job_queue"


@dataclass
class EngineServices:
    settings: Settings
    database: Database
    workflow_queue: JobQueue
    job_queue: JobQueue
    broadcaster: Broadcaster
    frames: FramePublisher
    owns_database: bool = True

    @classmethod
    def open(cls, settings: Settings, database: Database | None = None) -> EngineServices:
        """Build from settings; a `database` passed in stays open when these close."""
        broadcaster = create_broadcaster(settings.redis_url)
        return cls(
            settings=settings,
            database=database or open_database(settings.database_url),
            workflow_queue=create_queue(WORKFLOW_QUEUE, settings.redis_url),
            job_queue=create_queue(JOB_QUEUE, settings.redis_url),
            broadcaster=broadcaster,
            frames=FramePublisher(broadcaster),
            owns_database=database is None,
        )

    def publish_events(self, events: Iterable[dict[str, Any]]) -> None:
        """Events the engine raises (`asset.produced`, ...), sent after their commit.

        For now they go out as live frames; the persisted event bus takes them over next.
        """
        self.frames.publish([frame(event["type"], event) for event in events])

    async def close(self) -> None:
        await self.frames.close()
        await self.workflow_queue.close()
        await self.job_queue.close()
        await self.broadcaster.close()
        if self.owns_database:
            await self.database.dispose()
