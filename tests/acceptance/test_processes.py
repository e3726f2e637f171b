"""Processes as deployed: workers on PostgreSQL + Redis sharing work, dying, and restarting.

Scaled tests use the session's PostgreSQL database and their own Redis database number, so
their queues cannot meet another test run's.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text

from apphub.store.database import open_database
from apphub.store.tables import metadata
from tests.acceptance.conftest import Process, apphub_env, free_port, start_apphub
from tests.runs import FIXTURES

ENDED = {"succeeded", "failed", "canceled"}


class Cluster:
    """An API process and any number of worker processes, sharing one database and Redis."""

    def __init__(self, workdir: Path, env: dict[str, str], port: int) -> None:
        self.workdir, self.env, self.port = workdir, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.processes: list[Process] = []

    def start(self, args: list[str], name: str) -> Process:
        process = start_apphub(args, self.env, self.workdir, name)
        self.processes.append(process)
        return process

    @property
    def headers(self) -> dict[str, str]:
        token = (self.workdir / ".apphub" / "operator-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(self.url + path, json=body, headers=self.headers, timeout=30)
        assert response.status_code in (201, 202), response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = httpx.get(
            f"{self.url}/workflow-runs?limit=200", timeout=30
        ).json()["data"]
        return runs

    def wait_all_ended(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = self.runs()
            if len(runs) >= count and all(run["status"] in ENDED for run in runs):
                return runs
            time.sleep(0.2)
        statuses = Counter(run["status"] for run in runs)
        logs = "\n".join(p.log_path.read_text()[-3000:] for p in self.processes)
        raise AssertionError(f"runs did not end in {timeout}s: {statuses}\n{logs}")

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
async def postgres_database(postgres_url: str) -> str:
    """The session's PostgreSQL database, emptied: the scaled mode's only database."""
    database = open_database(postgres_url)
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    async with database.write() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await database.dispose()
    return postgres_url


@pytest.fixture
def cluster(postgres_database: str, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    redis_db = random.randint(1, 15)
    scaled_redis = redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
    redis.Redis.from_url(scaled_redis).flushdb()
    port = free_port()
    env = apphub_env(tmp_path, port, postgres_database)
    env |= {
        "REDIS_URL": scaled_redis,
        "APPHUB_HEARTBEAT_TIMEOUT_MS": "3000",
        "APPHUB_RECONCILE_INTERVAL_MS": "1000",
        "APPHUB_RUN_CONCURRENCY": "10",
    }
    cluster = Cluster(tmp_path, env, port)
    cluster.start(["serve", "--no-workers"], "api").wait_healthy(cluster.url)
    try:
        yield cluster
    finally:
        cluster.stop()
        client = redis.Redis.from_url(scaled_redis)
        client.flushdb()
        client.close()


def _register(cluster: Cluster, log_file: Path, sleep: float, retry: bool) -> None:
    cluster.post("/jobs", {"slug": "log", "name": "log", "entryPoint": f"{FIXTURES}:log_execution"})
    policy = {"retryPolicy": {"maxAttempts": 2, "strategy": "none"}} if retry else {}

    def step(step_id: str, *after: str) -> dict[str, Any]:
        parameters = {"logFile": str(log_file), "step": step_id, "sleep": sleep}
        return {
            "id": step_id,
            "jobSlug": "log",
            "dependsOn": list(after),
            "parameters": parameters,
            **policy,
        }

    steps = [step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")]
    cluster.post("/workflows", {"slug": "spread", "name": "spread", "steps": steps})


async def _start_runs(cluster: Cluster, count: int) -> None:
    async with httpx.AsyncClient(
        base_url=cluster.url, headers=cluster.headers, timeout=30
    ) as client:
        responses = await asyncio.gather(
            *(client.post("/workflows/spread/run", json={}) for _ in range(count))
        )
    assert all(response.status_code == 202 for response in responses)


def _executions(log_file: Path) -> list[tuple[str, str, str]]:
    lines = log_file.read_text().splitlines() if log_file.exists() else []
    return [tuple(line.split()) for line in lines]  # type: ignore[misc]


def test_two_workers_run_every_step_exactly_once(cluster: Cluster, tmp_path: Path) -> None:
    workers = [cluster.start(["worker"], f"worker-{n}") for n in (1, 2)]
    log_file = tmp_path / "executions.log"
    _register(cluster, log_file, sleep=0.05, retry=False)
    asyncio.run(_start_runs(cluster, 50))
    runs = cluster.wait_all_ended(50, timeout=90)
    assert Counter(run["status"] for run in runs) == {"succeeded": 50}
    executions = _executions(log_file)
    per_step = Counter((run_id, step_id) for run_id, step_id, _ in executions)
    assert len(per_step) == 200
    assert set(per_step.values()) == {1}, "a step ran more than once"
    assert {pid for _, _, pid in executions} == {str(worker.pid) for worker in workers}


def test_a_killed_worker_leaves_its_runs_to_the_other(cluster: Cluster, tmp_path: Path) -> None:
    doomed = cluster.start(["worker"], "doomed")
    log_file = tmp_path / "executions.log"
    _register(cluster, log_file, sleep=1.0, retry=True)
    asyncio.run(_start_runs(cluster, 6))
    deadline = time.monotonic() + 30
    while not any(pid == str(doomed.pid) for *_, pid in _executions(log_file)):
        assert time.monotonic() < deadline, "the first worker never started a step"
        time.sleep(0.05)
    survivor = cluster.start(["worker"], "survivor")
    doomed.kill()  # SIGKILL, mid-step: no chance to hand anything back
    runs = cluster.wait_all_ended(6, timeout=90)
    assert Counter(run["status"] for run in runs) == {"succeeded": 6}
    finished_by = {pid for *_, pid in _executions(log_file)}
    assert str(survivor.pid) in finished_by
    retried = [
        step
        for run in runs
        for step in httpx.get(f"{cluster.url}/workflow-runs/{run['id']}/steps").json()["data"]
        if step["attempt"] == 2
    ]
    assert retried, "no step was taken over after the kill"


def test_embedded_restart_finishes_an_interrupted_run(tmp_path: Path) -> None:
    """SIGKILL an embedded server mid-step; the next start finishes the run (attempt 2)."""
    port = free_port()
    env = apphub_env(tmp_path, port, f"sqlite+aiosqlite:///{tmp_path}/hub.db")
    cluster = Cluster(tmp_path, env, port)
    first = cluster.start(["serve"], "first")
    first.wait_healthy(cluster.url)
    log_file = tmp_path / "executions.log"
    _register(cluster, log_file, sleep=1.5, retry=True)
    run = cluster.post("/workflows/spread/run", {})
    deadline = time.monotonic() + 30
    while not _executions(log_file):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.kill()
    second = cluster.start(["serve"], "second")
    try:
        second.wait_healthy(cluster.url)
        runs = cluster.wait_all_ended(1, timeout=60)
        assert [(r["id"], r["status"]) for r in runs] == [(run["id"], "succeeded")]
        steps = httpx.get(f"{cluster.url}/workflow-runs/{run['id']}/steps").json()["data"]
        assert {s["stepId"]: s["attempt"] for s in steps}["a"] == 2
    finally:
        cluster.stop()


def test_a_scheduled_retry_survives_a_restart(tmp_path: Path) -> None:
    """A retry waiting on its delay when the server stops still happens after it starts again."""
    port = free_port()
    env = apphub_env(tmp_path, port, f"sqlite+aiosqlite:///{tmp_path}/hub.db")
    cluster = Cluster(tmp_path, env, port)
    first = cluster.start(["serve"], "first")
    first.wait_healthy(cluster.url)
    marker = tmp_path / "calls"
    cluster.post("/jobs", {"slug": "flaky", "name": "flaky", "entryPoint": f"{FIXTURES}:flaky"})
    policy = {"maxAttempts": 2, "strategy": "fixed", "initialDelayMs": 3000}
    cluster.post(
        "/workflows",
        {
            "slug": "later",
            "name": "later",
            "steps": [
                {
                    "id": "try",
                    "jobSlug": "flaky",
                    "parameters": {"marker": str(marker)},
                    "retryPolicy": policy,
                }
            ],
        },
    )
    run = cluster.post("/workflows/later/run", {})
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.stop()  # a clean stop, during the 3 s wait
    assert marker.read_text() == "1"
    second = cluster.start(["serve"], "second")
    try:
        second.wait_healthy(cluster.url)
        runs = cluster.wait_all_ended(1, timeout=30)
        assert runs[0]["id"] == run["id"]
        assert runs[0]["status"] == "succeeded"
        assert marker.read_text() == "2"
    finally:
        cluster.stop()
