"""`POST /admin/retries/{events|workflow-steps}/{id}/{cancel|force}` on every backend.

Deferred events come from a real rate limit (one event a minute from `metastore.api`, then a
pause); step retries from the `flaky` fixture job with a retry a minute ahead. A trigger on
the events shows what was handed on; the runs and step records show what the steps did.
Outcomes are judged by what was recorded (deliveries, runs, step records, event counts).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from apphub.domain.base import parse_iso
from apphub.domain.ratelimits import RateLimit
from apphub.store.database import Database
from apphub.store.tables import workflow_runs
from tests.conftest import READER_TOKEN, Hub, bearer, open_hub
from tests.runs import register_job, register_workflow, start_run, steps_of, wait_for, wait_for_run

SOURCE = "metastore.api"
EVENT_TYPE = "metastore.record.updated"
PAUSE_MS = 3000
"""Long enough for the operator's calls to land inside the pause, short enough to wait out."""
LATER = {"maxAttempts": 2, "strategy": "fixed", "initialDelayMs": 60_000}
"""A retry a minute ahead: a run that ends within the tests' deadlines was not waiting for it."""


@pytest.fixture
async def hub(database: Database, tmp_path: Path) -> AsyncIterator[Hub]:
    limits = (RateLimit(SOURCE, 1, 60_000, PAUSE_MS),)
    async with open_hub(database, tmp_path, event_rate_limits=limits) as opened:
        await register_job(opened.client, "emit", "emit")
        await register_job(opened.client, "flaky", "flaky")
        await register_job(opened.client, "sleepy", "sleepy")
        yield opened


# --- helpers ---------------------------------------------------------------------------------


async def publish(api: httpx.AsyncClient, n: int) -> str:
    event_id = f"evt-{n}-{uuid.uuid4().hex[:8]}"
    body = {"id": event_id, "type": EVENT_TYPE, "source": SOURCE, "payload": {"n": n}}
    response = await api.post("/events", json=body)
    assert response.status_code == 202, response.text
    return event_id


async def event_health(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/admin/event-health")
    assert response.status_code == 200, response.text
    health: dict[str, Any] = response.json()["data"]
    return health


async def deliveries(api: httpx.AsyncClient, trigger_id: str, **query: Any) -> list[Any]:
    response = await api.get(f"/workflows/sync/triggers/{trigger_id}/deliveries", params=query)
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["data"]
    return found


async def launched(api: httpx.AsyncClient, trigger_id: str, event_id: str) -> dict[str, Any]:
    path = f"/workflows/sync/triggers/{trigger_id}/deliveries?eventId={event_id}"
    rows = await wait_for(api, path, lambda rows: bool(rows) and rows[0]["status"] == "launched")
    delivery: dict[str, Any] = rows[0]
    return delivery


async def retry(
    api: httpx.AsyncClient, kind: str, record_id: str, action: str, **kwargs: Any
) -> httpx.Response:
    return await api.post(f"/admin/retries/{kind}/{record_id}/{action}", **kwargs)


def _error(response: httpx.Response, status: int, reason: str | None = None) -> None:
    assert response.status_code == status, response.text
    if reason is not None:
        assert response.json()["reason"] == reason, response.text


# --- deferred events -------------------------------------------------------------------------


async def test_operators_force_and_cancel_deferred_events(hub: Hub) -> None:
    api = hub.client
    await register_workflow(api, "sync", [{"id": "sync", "jobSlug": "emit"}])
    response = await api.post("/workflows/sync/triggers", json={"eventType": EVENT_TYPE})
    assert response.status_code == 201, response.text
    trigger_id = response.json()["data"]["id"]

    admitted = await publish(api, 1)  # the one event a minute the limit lets through
    forced, canceled, waited = [await publish(api, n) for n in (2, 3, 4)]
    health = await event_health(api)
    assert health["eventCounts"]["deferred"] == 3
    assert health["retryBacklog"]["events"]["count"] == 3
    [paused] = health["pausedSources"]
    assert paused["source"] == SOURCE
    pause_ends = parse_iso(paused["until"])

    # The calls that must land inside the pause come first: force, then cancel.
    response = await retry(api, "events", forced, "force")
    assert response.status_code == 202, response.text
    assert response.json()["data"]["record"]["id"] == forced
    refused = await retry(api, "events", canceled, "cancel", headers=bearer(READER_TOKEN))
    _error(refused, 403)  # without admin:write: refused, and the event still waits
    assert (await event_health(api))["eventCounts"]["deferred"] == 2
    response = await retry(api, "events", canceled, "cancel")
    assert response.status_code == 200, response.text
    outcome = response.json()["data"]
    assert (outcome["kind"], outcome["id"], outcome["action"]) == ("events", canceled, "cancel")
    assert outcome["status"] == "canceled"
    assert outcome["record"]["id"] == canceled

    _error(await retry(api, "events", canceled, "cancel"), 409, "not_waiting")
    _error(await retry(api, "events", canceled, "force"), 409, "not_waiting")
    _error(await retry(api, "events", "no-such-event", "cancel"), 404)
    _error(await retry(api, "events", "no-such-event", "force"), 404)
    _error(await retry(api, "events", admitted, "force"), 409, "not_waiting")  # processed
    delivery = await launched(api, trigger_id, forced)
    run = await wait_for_run(api, delivery["workflowRunId"])
    assert run["status"] == "succeeded", run
    assert run["trigger"]["event"]["id"] == forced
    assert parse_iso(run["createdAt"]) < pause_ends  # handed on now, not when the pause ended

    # When the pause ends, the event left waiting goes on; the canceled one never does.
    later = await launched(api, trigger_id, waited)
    later_run = await wait_for_run(api, later["workflowRunId"])
    assert parse_iso(later_run["createdAt"]) >= pause_ends
    assert await hub.services.ingress.process_due_deferred() == 0
    assert await deliveries(api, trigger_id, eventId=canceled) == []
    handed_on = {d["eventId"] for d in await deliveries(api, trigger_id)}
    assert handed_on == {admitted, forced, waited}
    health = await event_health(api)
    assert (health["eventCounts"]["deferred"], health["eventCounts"]["canceled"]) == (0, 1)
    assert health["retryBacklog"]["events"]["count"] == 0
    stored = (await api.get("/admin/events", params={"source": SOURCE})).json()["data"]
    assert canceled in {view["id"] for view in stored["events"]}  # kept, never handed on


# --- workflow steps --------------------------------------------------------------------------


async def _released(database: Database, run_id: str) -> None:
    """The driver has let go of the run while its step waits (only then may cancel act)."""
    deadline = time.monotonic() + 20
    while True:
        async with database.read() as connection:
            query = select(workflow_runs.c.claimed_by).where(workflow_runs.c.id == run_id)
            holder = await connection.scalar(query)
        if holder is None:
            return
        assert time.monotonic() < deadline, f"run {run_id} was never released"
        await asyncio.sleep(0.05)


async def _waiting_step(hub: Hub, run_id: str, step_id: str) -> dict[str, Any]:
    """The step record once its retry is scheduled and its run released."""
    steps = await wait_for(
        hub.client,
        f"/workflow-runs/{run_id}/steps",
        lambda rows: any(s["stepId"] == step_id and s["retryState"] == "scheduled" for s in rows),
    )
    await _released(hub.services.database, run_id)
    step: dict[str, Any] = next(s for s in steps if s["stepId"] == step_id)
    return step


async def _flaky_workflow(api: httpx.AsyncClient, slug: str, marker: Path) -> None:
    steps = [
        {
            "id": "try",
            "jobSlug": "flaky",
            "parameters": {"marker": str(marker)},
            "retryPolicy": LATER,
        },
        {"id": "after", "jobSlug": "emit", "dependsOn": ["try"]},
    ]
    await register_workflow(api, slug, steps)


async def test_force_runs_a_scheduled_step_retry_now(hub: Hub, tmp_path: Path) -> None:
    api = hub.client
    marker = tmp_path / "force-calls"
    await _flaky_workflow(api, "later", marker)
    run = await start_run(api, "later")
    step = await _waiting_step(hub, run["id"], "try")
    assert step["attempt"] == 1
    due = parse_iso(step["nextAttemptAt"])
    assert (await event_health(api))["retryBacklog"]["workflowSteps"]["count"] == 1

    response = await retry(api, "workflow-steps", step["id"], "force")
    assert response.status_code == 202, response.text
    outcome = response.json()["data"]
    assert (outcome["kind"], outcome["id"], outcome["action"]) == (
        "workflow-steps",
        step["id"],
        "force",
    )
    assert outcome["record"] == {"stepId": "try", "workflowRunId": run["id"], "status": "pending"}

    finished = await wait_for_run(api, run["id"])  # 20 s at most: the retry was 60 s ahead
    assert finished["status"] == "succeeded", finished
    steps = await steps_of(api, run["id"])
    assert (steps["try"]["status"], steps["try"]["attempt"]) == ("succeeded", 2)
    assert steps["after"]["status"] == "succeeded"
    assert marker.read_text() == "2"
    assert parse_iso(finished["completedAt"]) < due
    assert (await event_health(api))["retryBacklog"]["workflowSteps"]["count"] == 0
    # Nothing waits any more: a second force or a cancel finds nothing to do.
    _error(await retry(api, "workflow-steps", step["id"], "force"), 409, "not_waiting")
    _error(await retry(api, "workflow-steps", step["id"], "cancel"), 409, "not_waiting")


async def test_cancel_fails_a_scheduled_step_for_good(hub: Hub, tmp_path: Path) -> None:
    api = hub.client
    marker = tmp_path / "cancel-calls"
    await _flaky_workflow(api, "doomed", marker)
    run = await start_run(api, "doomed")
    step = await _waiting_step(hub, run["id"], "try")

    refused = await retry(api, "workflow-steps", step["id"], "cancel", headers=bearer(READER_TOKEN))
    _error(refused, 403)
    unchanged = (await steps_of(api, run["id"]))["try"]
    assert (unchanged["status"], unchanged["retryState"]) == ("pending", "scheduled")
    assert unchanged["nextAttemptAt"] == step["nextAttemptAt"]
    _error(await retry(api, "workflow-steps", "no-such-step", "cancel"), 404)
    _error(await retry(api, "workflow-steps", "no-such-step", "force"), 404)

    response = await retry(api, "workflow-steps", step["id"], "cancel")
    assert response.status_code == 200, response.text
    outcome = response.json()["data"]
    assert outcome["status"] == "failed"
    assert outcome["record"] == {"stepId": "try", "workflowRunId": run["id"], "status": "failed"}

    finished = await wait_for_run(api, run["id"])
    assert finished["status"] == "failed", finished
    steps = await steps_of(api, run["id"])
    failed = steps["try"]
    assert (failed["status"], failed["retryState"], failed["nextAttemptAt"]) == (
        "failed",
        None,
        None,
    )
    assert failed["attempt"] == 1
    assert "attempt 1 fails" in failed["errorMessage"]
    assert "retry canceled by an operator" in failed["errorMessage"]
    assert steps["after"]["status"] == "skipped"
    assert marker.read_text() == "1"  # never tried again
    assert (await event_health(api))["retryBacklog"]["workflowSteps"]["count"] == 0
    _error(await retry(api, "workflow-steps", step["id"], "cancel"), 409, "not_waiting")
    _error(await retry(api, "workflow-steps", step["id"], "force"), 409, "not_waiting")


async def test_a_held_run_refuses_cancel_and_takes_force_through_its_worker(
    hub: Hub, tmp_path: Path
) -> None:
    """A step waits for its retry while a sibling still runs: the worker keeps the run."""
    api = hub.client
    marker = tmp_path / "held-calls"
    steps = [
        {
            "id": "try",
            "jobSlug": "flaky",
            "parameters": {"marker": str(marker)},
            "retryPolicy": LATER,
        },
        {"id": "hold", "jobSlug": "sleepy", "parameters": {"seconds": 60}},
    ]
    await register_workflow(api, "held", steps)
    run = await start_run(api, "held")
    rows = await wait_for(
        api,
        f"/workflow-runs/{run['id']}/steps",
        lambda rows: any(s["stepId"] == "try" and s["retryState"] == "scheduled" for s in rows),
    )
    step = next(s for s in rows if s["stepId"] == "try")
    assert next(s for s in rows if s["stepId"] == "hold")["status"] == "running"

    _error(await retry(api, "workflow-steps", step["id"], "cancel"), 409, "run_held")
    still = (await steps_of(api, run["id"]))["try"]
    assert (still["status"], still["retryState"]) == ("pending", "scheduled")

    response = await retry(api, "workflow-steps", step["id"], "force")
    assert response.status_code == 202, response.text
    retried = await wait_for(
        api,
        f"/workflow-runs/{run['id']}/steps",
        lambda rows: any(s["stepId"] == "try" and s["status"] == "succeeded" for s in rows),
    )
    assert next(s for s in retried if s["stepId"] == "try")["attempt"] == 2
    assert next(s for s in retried if s["stepId"] == "hold")["status"] == "running"
    assert marker.read_text() == "2"

    assert (await api.post(f"/workflow-runs/{run['id']}/cancel")).status_code == 202
    assert (await wait_for_run(api, run["id"]))["status"] == "canceled"
