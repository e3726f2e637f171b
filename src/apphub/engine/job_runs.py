"""Standalone job runs (`POST /jobs/{slug}/run`): claim, run, record, retry later if allowed."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from apphub.bus.frames import frame
from apphub.domain.base import utc_now
from apphub.domain.planning import after_failure
from apphub.engine.records import job_run_view
from apphub.engine.runtimes import JobInvocation, JobOutcome, run_job
from apphub.engine.services import EngineServices
from apphub.store import job_runs as job_run_store
from apphub.store import jobs as job_store

ORPHANED = JobOutcome(
    status="failed",
    error_message="the worker running this job stopped heartbeating",
    failure_reason="heartbeat-timeout",
)


async def handle_job_run(
    services: EngineServices, job_run_id: str, worker_id: str, stale_after_s: float
) -> None:
    now = utc_now()
    async with services.database.write() as connection:
        stale_before = now - timedelta(seconds=stale_after_s)
        if not await job_run_store.claim_job_run(
            connection, job_run_id, worker_id, now, stale_before
        ):
            return
        row = await job_run_store.job_run_row(connection, job_run_id)
        job = await job_store.get_job(connection, row.job_slug)
        orphaned = row.status == "running"
        if not orphaned:
            started = {"status": "running", "started_at": row.started_at or now}
            await job_run_store.update_job_run(connection, job_run_id, started)
    values = dict(row._mapping)
    if orphaned or job is None:
        outcome = ORPHANED
    else:
        values |= started
        services.frames.publish([frame("job.run.running", job_run_view(values, row.job_slug))])
        outcome = await run_job(
            JobInvocation(
                runtime=job.runtime,
                entry_point=job.entry_point,
                parameters=row.parameters,
                run_id=job_run_id,
                timeout_s=row.timeout_ms / 1000 if row.timeout_ms else None,
                env=services.child_env or None,
            )
        )
    await _record(services, values, outcome, job.retry_policy if job else None)


async def _record(
    services: EngineServices, values: dict[str, Any], outcome: JobOutcome, policy: Any
) -> None:
    now = utc_now()
    changes: dict[str, Any] = {
        "result": outcome.result,
        "error_message": outcome.error_message,
        "failure_reason": outcome.failure_reason,
        "logs_tail": outcome.logs_tail or None,
        "claimed_by": None,
        "updated_at": now,
    }
    retry = None
    if outcome.status != "succeeded":
        retry = after_failure(
            policy, values["attempt"], outcome.failure_reason, now, random.random()
        )
    if retry is not None and retry.retry:
        changes |= {
            "status": "pending",
            "attempt": values["attempt"] + 1,
            "next_attempt_at": retry.next_attempt_at,
        }
    else:
        started_at = values.get("started_at") or now
        changes |= {
            "status": outcome.status,
            "completed_at": now,
            "duration_ms": int((now - started_at).total_seconds() * 1000),
        }
    async with services.database.write() as connection:
        await job_run_store.update_job_run(connection, values["id"], changes)
    final = values | changes
    services.frames.publish(
        [frame(f"job.run.{final['status']}", job_run_view(final, values["job_slug"]))]
    )
    if retry is not None and retry.retry and retry.next_attempt_at is not None:
        delay = max(0.0, (retry.next_attempt_at - utc_now()).total_seconds())
        await services.job_queue.enqueue(values["id"], key=f"{values['id']}:retry", delay_s=delay)
