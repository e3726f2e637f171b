"""The process-wide parts the API and the workers share: database, queues, broadcaster."""

from __future__ import annotations

from dataclasses import dataclass, field

from apphub.automation.ingress import EventIngress
from apphub.bus import Broadcaster, create_broadcaster
from apphub.bus.frames import FramePublisher
from apphub.bus.publisher import register_local_ingest, unregister_local_ingest
from apphub.domain.ratelimits import RateLimiter
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
    ingress: EventIngress
    owns_database: bool = True
    child_env: dict[str, str] = field(default_factory=dict)
    """Extra environment for job child processes (how they publish events back)."""

    @classmethod
    def open(cls, settings: Settings, database: Database | None = None) -> EngineServices:
        """Build from settings (inside the event loop); a `database` passed in stays open.

        The event ingress is registered for inline publishers in this process.
        """
        broadcaster = create_broadcaster(settings.redis_url)
        frames = FramePublisher(broadcaster)
        db = database or open_database(settings.database_url)
        ingress = EventIngress(db, frames, RateLimiter(settings.event_rate_limits))
        register_local_ingest(ingress.ingest)
        return cls(
            settings=settings,
            database=db,
            workflow_queue=create_queue(WORKFLOW_QUEUE, settings.redis_url),
            job_queue=create_queue(JOB_QUEUE, settings.redis_url),
            broadcaster=broadcaster,
            frames=frames,
            ingress=ingress,
            owns_database=database is None,
        )

    async def close(self) -> None:
        unregister_local_ingest()
        await self.ingress.close()
        await self.frames.close()
        await self.workflow_queue.close()
        await self.job_queue.close()
        await self.broadcaster.close()
        if self.owns_database:
            await self.database.dispose()
