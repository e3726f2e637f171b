"""Processes as deployed: workers on PostgreSQL + Redis sharing work, dying, and restarting.

Scaled tests use the session's PostgreSQL database and their own Redis database number, so
their queues cannot meet another test run's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.conftest import Cluster, apphub_env, free_port
from tests.runs import FIXTURES

ENDED = {"succeeded", "failed", "canceled"}


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
