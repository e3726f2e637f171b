"""The worker process: consume run wake-ups, drive runs, heartbeat, reconcile, obey cancels.

Each loop has a plain `*_once` step that tests call directly; `run()` only schedules them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import timedelta

import structlog

from apphub.automation.loops import every
from apphub.bus.frames import CONTROL_CHANNEL
from apphub.domain.base import utc_now
from apphub.domain.workflows import WorkflowDefinition, job_slugs
from apphub.engine.driver import DriverContext, RunDriver
from apphub.engine.job_runs import handle_job_run
from apphub.engine.service_calls import ServiceCaller
from apphub.engine.services import EngineServices
from apphub.store import claims as claim_store
from apphub.store import job_runs as job_run_store
from apphub.store import jobs as job_store
from apphub.store import workflow_runs as run_store

log = structlog.get_logger(__name__)

RECONCILE_BATCH = 500


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(self, services: EngineServices, *, embedded: bool = False) -> None:
        self.services = services
        self.settings = services.settings
        self.embedded = embedded
        """Embedded (one process per database): claims left by a previous process are dead."""
        self.worker_id = new_worker_id()
        self.drivers: dict[str, RunDriver] = {}
        self.stale_after_s = self.settings.heartbeat_timeout_ms / 1000
        self.service_caller = ServiceCaller(services.database)
        self._context = DriverContext(
            database=services.database,
            workflow_queue=services.workflow_queue,
            broadcaster=services.broadcaster,
            publish_frames=services.frames.publish,
            process_events=services.ingress.process_soon,
            worker_id=self.worker_id,
            call_service=self.service_caller.call,
            child_env=services.child_env,
        )

    async def run(self) -> None:
        """Run every loop until cancelled."""
        if self.embedded:
            await self.release_dead_claims()
        await self.reconcile_once()
        log.info("worker started", worker_id=self.worker_id)
        try:
            await self._loops()
        finally:
            await asyncio.shield(self._hand_back())
            await self.service_caller.close()

    async def _loops(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(
                self.services.workflow_queue.consume(
                    self.handle_workflow_run, concurrency=self.settings.run_concurrency
                )
            )
            group.create_task(
                self.services.job_queue.consume(
                    self.handle_job_run, concurrency=self.settings.job_concurrency
                )
            )
            group.create_task(every(self.stale_after_s / 4, self.heartbeat_once, "heartbeat"))
            group.create_task(
                every(self.settings.reconcile_interval_ms / 1000, self.reconcile_once, "reconcile")
            )
            group.create_task(self._listen_for_control())

    # --- runs ---------------------------------------------------------------------------------

    async def handle_workflow_run(self, run_id: str) -> None:
        if run_id in self.drivers:
            return
        driver = await self._claim(run_id)
        if driver is None:
            return
        self.drivers[run_id] = driver
        try:
            await driver.drive()
        finally:
            self.drivers.pop(run_id, None)
        if driver.poked.is_set():
            # Poked while letting the run go (a forced retry, an awaited asset): the release
            # wrote the old wake-up time, so look at the run again now.
            await self.services.workflow_queue.enqueue(run_id)

    async def _claim(self, run_id: str) -> RunDriver | None:
        now = utc_now()
        stale_before = now - timedelta(seconds=self.stale_after_s)
        async with self.services.database.write() as connection:
            if not await run_store.claim_workflow_run(
                connection, run_id, self.worker_id, now, stale_before
            ):
                return None
            run = await run_store.run_row(connection, run_id)
            workflow = WorkflowDefinition.model_validate(run.workflow_snapshot)
            jobs = await job_store.jobs_by_slug(connection, job_slugs(workflow.steps))
            steps = await run_store.step_rows(connection, run_id)
        return RunDriver(self._context, run, workflow, jobs, steps)

    async def handle_job_run(self, job_run_id: str) -> None:
        await handle_job_run(self.services, job_run_id, self.worker_id, self.stale_after_s)

    # --- liveness and repair ------------------------------------------------------------------

    async def heartbeat_once(self) -> None:
        async with self.services.database.write() as connection:
            canceled = await claim_store.heartbeat(connection, self.worker_id, utc_now())
        for run_id in canceled:
            self.cancel(run_id)

    async def reconcile_once(self) -> int:
        """Wake every run and job run that nobody drives; the queue dedupes repeats."""
        now = utc_now()
        stale_before = now - timedelta(seconds=self.stale_after_s)
        async with self.services.database.read() as connection:
            runs = await run_store.workflow_runs_to_wake(
                connection, now, stale_before, RECONCILE_BATCH
            )
            job_runs = await job_run_store.job_runs_to_wake(
                connection, now, stale_before, RECONCILE_BATCH
            )
        for run_id in runs:
            if run_id not in self.drivers:
                await self.services.workflow_queue.enqueue(run_id)
        for job_run_id, due_at in job_runs:
            delay = max(0.0, (due_at - now).total_seconds()) if due_at else 0.0
            await self.services.job_queue.enqueue(job_run_id, delay_s=delay)
        return len(runs) + len(job_runs)

    async def _hand_back(self) -> None:
        """On shutdown, let go of what this worker held so another can take it at once."""
        try:
            async with self.services.database.write() as connection:
                run_ids = await claim_store.release_claims_of(connection, self.worker_id)
            for run_id in run_ids:
                await self.services.workflow_queue.enqueue(run_id)
            log.info("worker stopped", worker_id=self.worker_id, handed_back=len(run_ids))
        except Exception:
            log.exception("could not hand back claims; other workers will time them out")

    async def release_dead_claims(self) -> None:
        """Embedded start: nothing else runs on this database, so every claim is a dead one."""
        async with self.services.database.write() as connection:
            await claim_store.release_all_claims(connection)

    def cancel(self, run_id: str) -> None:
        driver = self.drivers.get(run_id)
        if driver is not None:
            driver.cancel_requested.set()

    async def _listen_for_control(self) -> None:
        """Cancels, and wake-ups for runs this worker is driving (an awaited asset arrived)."""
        async with self.services.broadcaster.subscribe(CONTROL_CHANNEL) as messages:
            async for message in messages:
                run_id = str(message.get("runId"))
                if message.get("type") == "cancel-run":
                    self.cancel(run_id)
                elif message.get("type") == "wake-run" and run_id in self.drivers:
                    self.drivers[run_id].poke()
                elif message.get("type") == "force-retry":
                    await self._force_retry(run_id, str(message.get("stepId")))

    async def _force_retry(self, run_id: str, step_id: str) -> None:
        """A driven run takes the forced retry at once; a run let go meanwhile is woken now
        (the queue's own wake-up may have arrived while this worker still held it)."""
        driver = self.drivers.get(run_id)
        if driver is not None:
            driver.force_retry(step_id)
        else:
            await self.services.workflow_queue.enqueue(run_id)
