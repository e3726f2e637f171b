"""The process-wide parts the API and the workers share: database, queues, broadcaster."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from apphub.automation import scheduler as scheduling
from apphub.automation import triggers
from apphub.automation.ingress import EventIngress, EventSubscriber
from apphub.automation.materializer import MATERIALIZER_QUEUE, TIMER_QUEUE, Materializer, wants
from apphub.automation.scheduler import Scheduler
from apphub.automation.timers import TimerService
from apphub.automation.triggers import TriggerWorker
from apphub.bus import Broadcaster, create_broadcaster
from apphub.bus.frames import FramePublisher
from apphub.bus.publisher import register_local_ingest, unregister_local_ingest
from apphub.domain.materialize import Backoff
from apphub.domain.ratelimits import RateLimiter
from apphub.domain.trigger_rules import PauseRule
from apphub.engine.service_health import HealthPoller
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
    materializer_queue: JobQueue
    """Event ids the ingress hands to the asset materializer."""
    trigger_queue: JobQueue
    """Event ids the ingress hands to the trigger worker."""
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
        materializer_queue = create_queue(MATERIALIZER_QUEUE, settings.redis_url)
        ingress.subscribers.append(EventSubscriber("materializer", materializer_queue, wants))
        trigger_queue = create_queue(triggers.TRIGGER_QUEUE, settings.redis_url)
        ingress.subscribers.append(EventSubscriber("triggers", trigger_queue, triggers.wants))
        register_local_ingest(ingress.ingest)
        return cls(
            settings=settings,
            database=db,
            workflow_queue=create_queue(WORKFLOW_QUEUE, settings.redis_url),
            job_queue=create_queue(JOB_QUEUE, settings.redis_url),
            broadcaster=broadcaster,
            frames=frames,
            ingress=ingress,
            materializer_queue=materializer_queue,
            trigger_queue=trigger_queue,
            owns_database=database is None,
        )

    def materializer(self) -> Materializer:
        """This process's asset materializer (embedded in `serve`, or `apphub materializer`).

        Scaled, its timers are also woken by delayed messages on a shared queue.
        """
        settings = self.settings
        return Materializer(
            self.database,
            self.materializer_queue,
            self.workflow_queue,
            self.ingress,
            self.frames,
            self.broadcaster,
            self._timers(TIMER_QUEUE),
            Backoff(settings.materializer_base_backoff_ms, settings.materializer_max_backoff_ms),
            refresh_interval_s=settings.materializer_refresh_interval_ms / 1000,
            repair_interval_s=settings.reconcile_interval_ms / 1000,
            retention=timedelta(days=settings.event_retention_days),
        )

    def health_poller(self) -> HealthPoller:
        """This process's service health poller; it acts only while it holds the cluster's role."""
        settings = self.settings
        return HealthPoller(
            self.database,
            self.broadcaster,
            self.ingress.process_soon,
            interval_s=settings.service_health_interval_ms / 1000,
            timeout_s=settings.service_health_timeout_ms / 1000,
        )

    def pause_rule(self) -> PauseRule:
        settings = self.settings
        return PauseRule(
            settings.trigger_error_threshold,
            settings.trigger_error_window_ms,
            settings.trigger_pause_ms,
        )

    def _timers(self, queue_name: str) -> TimerService:
        settings = self.settings
        wakeups = None if settings.inline else create_queue(queue_name, settings.redis_url)
        return TimerService(self.database, wakeups)

    def trigger_worker(self) -> TriggerWorker:
        """This process's trigger worker (embedded in `serve`, or `apphub triggers`)."""
        return TriggerWorker(
            self.database,
            self.trigger_queue,
            self.workflow_queue,
            self.frames,
            self._timers(triggers.TIMER_QUEUE),
            self.pause_rule(),
            repair_interval_s=self.settings.reconcile_interval_ms / 1000,
            retention=timedelta(days=self.settings.event_retention_days),
        )

    def scheduler(self) -> Scheduler:
        """This process's scheduler (embedded in `serve`, or `apphub scheduler`); it acts only
        while it holds the cluster's scheduler role."""
        return Scheduler(
            self.database,
            self.workflow_queue,
            self.frames,
            self.broadcaster,
            self._timers(scheduling.TIMER_QUEUE),
        )

    async def close(self) -> None:
        unregister_local_ingest()
        await self.ingress.close()
        await self.frames.close()
        await self.workflow_queue.close()
        await self.job_queue.close()
        await self.materializer_queue.close()
        await self.trigger_queue.close()
        await self.broadcaster.close()
        if self.owns_database:
            await self.database.dispose()
