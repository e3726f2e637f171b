"""Health pages and metrics on every backend: what each figure counts, and whose it is.

The Prometheus figures come from shared state only, so two app instances on one database
must report the same totals; queue latency is shared through Redis in scaled mode.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from apphub.domain.ratelimits import RateLimit
from apphub.queue import JobQueue, LocalQueue
from apphub.queue.saq import SaqQueue
from apphub.store.database import Database
from tests.conftest import JOBS_WRITER_TOKEN, READER_TOKEN, bearer, open_hub
from tests.runs import register_job, register_workflow, start_run, wait_for_run

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
_STATES = ("waiting", "active", "scheduled", "failed")


@asynccontextmanager
async def app_client(
    database: Database, tmp_path: Path, *, workers: bool = True, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """Another app instance on `database`, built as the `api` fixture builds its own."""
    async with open_hub(database, tmp_path, workers=workers, **settings) as hub:
        yield hub.client


async def publish(api: httpx.AsyncClient, count: int, source: str = "svc") -> None:
    for _ in range(count):
        body = {"type": "x.y", "source": source, "payload": {}}
        assert (await api.post("/events", json=body)).status_code == 202


async def data(api: httpx.AsyncClient, path: str, **headers: str) -> dict[str, Any]:
    response = await api.get(path, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["data"]
    return body


async def scrape(api: httpx.AsyncClient) -> Samples:
    """Every sample of `/metrics/prometheus`, by sample name and labels."""
    response = await api.get("/metrics/prometheus", headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


# --- /admin/event-health -------------------------------------------------------------------


async def test_event_health_counts_what_ingress_admitted(api: httpx.AsyncClient) -> None:
    await publish(api, 2)
    health = await data(api, "/admin/event-health")
    svc = health["sources"]["svc"]
    assert (svc["ingested"], svc["throttled"], svc["dropped"]) == (2, 0, 0)
    assert set(svc["lagMs"]) == {"avg", "latest", "max"}
    assert health["pausedSources"] == []
    assert health["rateLimits"] == []
    assert health["eventCounts"] == {"received": 0, "deferred": 0, "processed": 2}
    empty = {"count": 0, "overdue": 0, "nextDueAt": None}
    assert health["retryBacklog"] == {
        "events": empty,
        "workflowSteps": empty,
        "jobRuns": empty,
        "deliveries": empty,
    }
    assert health["generatedAt"].endswith("Z")


async def test_event_health_shows_a_throttled_source_and_its_backlog(
    database: Database, tmp_path: Path
) -> None:
    limits = (RateLimit("svc", 1, 60_000, 60_000),)
    async with app_client(database, tmp_path, event_rate_limits=limits) as api:
        await publish(api, 3)
        health = await data(api, "/admin/event-health")
    svc = health["sources"]["svc"]
    assert (svc["ingested"], svc["throttled"]) == (1, 2)
    assert [paused["source"] for paused in health["pausedSources"]] == ["svc"]
    assert health["rateLimits"] == [
        {"source": "svc", "limit": 1, "intervalMs": 60000, "pauseMs": 60000}
    ]
    events = health["retryBacklog"]["events"]
    assert (events["count"], events["overdue"]) == (2, 0)
    assert events["nextDueAt"] == health["pausedSources"][0]["until"]
    assert health["eventCounts"] == {"received": 0, "deferred": 2, "processed": 1}


async def test_health_pages_need_admin_read(api: httpx.AsyncClient) -> None:
    for path in ("/admin/event-health", "/admin/queue-health"):
        assert (await api.get(path, headers={"Authorization": ""})).status_code == 401
        forbidden = await api.get(path, headers=bearer(JOBS_WRITER_TOKEN))
        assert forbidden.status_code == 403
        assert (await api.get(path, headers=bearer(READER_TOKEN))).status_code == 200


# --- /admin/queue-health and /metrics ------------------------------------------------------


async def run_one_workflow(api: httpx.AsyncClient) -> dict[str, Any]:
    await register_job(api, "noop-job", "noop")
    await register_workflow(api, "one-step", [{"id": "only", "jobSlug": "noop-job"}])
    run = await wait_for_run(api, (await start_run(api, "one-step"))["id"])
    assert run["status"] == "succeeded", run
    return run


async def test_queue_health_lists_the_queues_with_their_latency(api: httpx.AsyncClient) -> None:
    await run_one_workflow(api)
    health = await data(api, "/admin/queue-health")
    assert health["inlineMode"] is True
    queues = {queue["name"]: queue for queue in health["queues"]}
    assert set(queues) == {"apphub_workflow_queue", "apphub_job_queue"}
    for queue in queues.values():
        assert queue["mode"] == "inline"
        assert queue["error"] is None
        assert all(isinstance(queue["counts"][state], int) for state in _STATES)
        assert set(queue["metrics"]["latencyMs"]) == {"avg", "max", "last"}
    workflow = queues["apphub_workflow_queue"]["metrics"]
    assert workflow["handled"] >= 1
    assert 0 <= workflow["latencyMs"]["last"] <= workflow["latencyMs"]["max"]


async def test_metrics_summarise_runs(api: httpx.AsyncClient) -> None:
    before = await data(api, "/metrics", Authorization="")
    assert before["workflows"]["total"] == 0
    assert before["workflows"]["averageDurationMs"] is None
    await run_one_workflow(api)
    summary = await data(api, "/metrics", Authorization="")
    workflows = summary["workflows"]
    assert workflows["total"] == 1
    assert workflows["statusCounts"]["succeeded"] == 1
    assert workflows["statusCounts"]["failed"] == 0
    assert workflows["failureRate"] == 0.0
    assert workflows["averageDurationMs"] >= 0
    assert summary["jobs"]["total"] >= 1
    assert summary["jobs"]["statusCounts"]["succeeded"] == summary["jobs"]["total"]


# --- /metrics/prometheus -------------------------------------------------------------------


async def test_prometheus_exports_shared_figures(api: httpx.AsyncClient) -> None:
    await publish(api, 3)
    await publish(api, 1, source="other")
    await run_one_workflow(api)
    samples = await scrape(api)
    assert sample(samples, "apphub_events_ingested_total", source="svc") == 3
    assert sample(samples, "apphub_events_ingested_total", source="other") == 1
    ingested = sum(
        value for (name, _), value in samples.items() if name == "apphub_events_ingested_total"
    )
    assert ingested >= 4  # and the registry's own `workflow.definition.created`
    assert sample(samples, "apphub_event_ingress_lag_ms_count") == ingested
    assert sample(samples, "apphub_event_ingress_lag_ms_bucket", le="+Inf") == ingested
    assert sample(samples, "apphub_workflow_runs", status="succeeded") == 1
    assert sample(samples, "apphub_workflow_runs", status="running") == 0
    assert sample(samples, "apphub_job_runs", status="succeeded") >= 1
    assert sample(samples, "apphub_events", status="processed") >= 4
    assert sample(samples, "apphub_retry_backlog", kind="events") == 0
    for queue in ("apphub_workflow_queue", "apphub_job_queue"):
        assert sample(samples, "apphub_queue_up", queue=queue) == 1
        assert sample(samples, "apphub_queue_jobs_total", queue=queue, state="waiting") == 0
        assert sample(samples, "apphub_queue_job_latency_ms", queue=queue) >= 0
    assert sample(samples, "apphub_queue_job_wait_ms_count", queue="apphub_workflow_queue") >= 1


async def test_prometheus_totals_are_the_same_from_every_process(
    api: httpx.AsyncClient, database: Database, tmp_path: Path
) -> None:
    """Two app instances on one database each ingest events; both scrapes add them all up."""
    async with app_client(database, tmp_path, workers=False) as other:
        await publish(api, 2)
        await publish(other, 3)
        first, second = await scrape(api), await scrape(other)
    for samples in (first, second):
        assert sample(samples, "apphub_events_ingested_total", source="svc") == 5
        assert sample(samples, "apphub_event_ingress_lag_ms_count") == 5
    assert _without_queues(first) == _without_queues(second)


def _without_queues(samples: Samples) -> Samples:
    """An inline queue lives in its own process; everything else is the database's."""
    return {key: value for key, value in samples.items() if not key[0].startswith("apphub_queue")}


async def test_a_source_too_long_for_the_labels_column_is_still_counted(
    api: httpx.AsyncClient,
) -> None:
    source = '"\\' * 128  # 256 characters that JSON doubles: the label would not fit
    await publish(api, 2, source=source)
    samples = await scrape(api)
    [(labels, value)] = [
        (dict(key[1]), value)
        for key, value in samples.items()
        if key[0] == "apphub_events_ingested_total"
    ]
    assert value == 2
    assert labels["source"].startswith(source[:40])


# --- queue latency -------------------------------------------------------------------------


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        held = predicate()
        if await held if inspect.isawaitable(held) else held:
            return
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def consuming(queue: JobQueue) -> AsyncIterator[list[str]]:
    handled: list[str] = []

    async def handler(item_id: str) -> None:
        handled.append(item_id)

    task = asyncio.create_task(queue.consume(handler, concurrency=2))
    try:
        yield handled
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def test_local_queue_latency_leaves_out_the_delay_asked_for() -> None:
    queue = LocalQueue("latency")
    await queue.enqueue("now")
    await queue.enqueue("later", delay_s=0.3)
    async with consuming(queue) as handled:
        await wait_until(lambda: len(handled) == 2)
    waits = (await queue.counts()).waits
    assert waits.count == 2
    assert waits.max_ms < 250, waits  # the 300 ms delay is not latency
    assert waits.avg_ms == pytest.approx(waits.total_ms / 2)


@pytest.fixture
async def saq_name(redis_url: str) -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"saq*:{name}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def test_saq_latency_is_shared_by_every_consumer(redis_url: str, saq_name: str) -> None:
    """Two consumers ("processes") hand out messages; a third handle sees all hand-offs."""
    first, second, reader = (SaqQueue(saq_name, redis_url, dequeue_timeout_s=0.1) for _ in "abc")
    try:
        for n in range(6):
            await reader.enqueue(f"m-{n}")
        async with consuming(first) as one, consuming(second) as two:
            await wait_until(lambda: len(one) + len(two) == 6)

            async def shared() -> bool:
                return (await reader.counts()).waits.count == 6

            await wait_until(shared)
        waits = (await reader.counts()).waits
        assert 0 <= waits.last_ms <= waits.max_ms
        assert waits.total_ms >= 0
    finally:
        for queue in (first, second, reader):
            await queue.close()


async def test_scaled_mode_lists_the_event_queue(
    database: Database, tmp_path: Path, redis_url: str, saq_name: str
) -> None:
    producer = SaqQueue(saq_name, redis_url)
    try:
        await producer.enqueue("an-event")
        async with app_client(
            database, tmp_path, workers=False, redis_url=redis_url, event_queue_name=saq_name
        ) as api:
            health = await data(api, "/admin/queue-health")
            samples = await scrape(api)
    finally:
        await producer.close()
    assert health["inlineMode"] is False
    queues = {queue["name"]: queue for queue in health["queues"]}
    assert {queue["mode"] for queue in queues.values()} == {"redis"}
    assert queues[saq_name]["counts"] == {"waiting": 1, "active": 0, "scheduled": 0, "failed": 0}
    assert sample(samples, "apphub_queue_jobs_total", queue=saq_name, state="waiting") == 1
