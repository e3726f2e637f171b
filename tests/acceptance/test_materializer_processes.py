"""The materializer as deployed: surviving restarts, and two of them sharing PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from apphub.store.database import open_database
from apphub.store.tables import materializer_decisions
from tests.acceptance.conftest import Cluster, apphub_env, free_port
from tests.runs import FIXTURES


def register(cluster: Cluster, steps: dict[str, dict[str, Any]]) -> None:
    cluster.post(
        "/jobs", {"slug": "produce", "name": "produce", "entryPoint": f"{FIXTURES}:produce"}
    )
    for slug, step in steps.items():
        cluster.post("/workflows", {"slug": slug, "name": slug, "steps": [step]})


def producing(
    asset: str, *, consumes: tuple[str, ...] = (), sleep: float = 0, **declaration: Any
) -> dict[str, Any]:
    return {
        "id": "make",
        "jobSlug": "produce",
        "produces": [{"assetId": asset, **declaration}],
        "consumes": [{"assetId": upstream} for upstream in consumes],
        "parameters": {"assets": [{"assetId": asset}], "sleep": sleep},
    }


def runs_of(cluster: Cluster, slug: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{cluster.url}/workflows/{slug}/runs?limit=50", timeout=30)
    runs: list[dict[str, Any]] = response.json()["data"]
    return runs


def wait_until(what: str, check: Any, timeout: float, cluster: Cluster) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    logs = "\n".join(p.log_path.read_text()[-3000:] for p in cluster.processes)
    raise AssertionError(f"{what} did not happen in {timeout}s\n{logs}")


def embedded(tmp_path: Path) -> Cluster:
    port = free_port()
    return Cluster(
        tmp_path, apphub_env(tmp_path, port, f"sqlite+aiosqlite:///{tmp_path}/hub.db"), port
    )


def test_a_freshness_timer_fires_after_a_restart(tmp_path: Path) -> None:
    """Stopped before the TTL ran out, started after: the refresh still happens."""
    cluster = embedded(tmp_path)
    first = cluster.start(["serve"], "first")
    first.wait_healthy(cluster.url)
    ttl: dict[str, Any] = {"freshness": {"ttlMs": 2500}, "autoMaterialize": {}}
    register(cluster, {"snapshot": producing("snap", **ttl)})
    manual = cluster.post("/workflows/snapshot/run", {})
    wait_until(
        "the first run",
        lambda: runs_of(cluster, "snapshot")[0]["status"] == "succeeded",
        20,
        cluster,
    )
    first.stop()
    stopped_at = time.monotonic()
    time.sleep(3.0)  # the TTL runs out while nothing runs
    second = cluster.start(["serve"], "second")
    try:
        second.wait_healthy(cluster.url)
        auto = wait_until(
            "the expiry run",
            lambda: [r for r in runs_of(cluster, "snapshot") if r["id"] != manual["id"]],
            20,
            cluster,
        )
        assert auto[-1]["trigger"]["reason"] == "expiry"
        assert auto[-1]["trigger"]["expiry"] == {"reason": "ttl"}
        assert time.monotonic() - stopped_at >= 2.5
    finally:
        cluster.stop()


def test_an_auto_run_in_flight_survives_a_crash(tmp_path: Path) -> None:
    """SIGKILL while an auto run runs: after the restart it finishes and its claim is let go."""
    cluster = embedded(tmp_path)
    first = cluster.start(["serve"], "first")
    first.wait_healthy(cluster.url)
    on_update = {"autoMaterialize": {"onUpstreamUpdate": True}}
    down = producing("clean", consumes=("raw",), sleep=2.0, **on_update)
    down["retryPolicy"] = {"maxAttempts": 2, "strategy": "none"}  # the crash costs attempt 1
    register(cluster, {"up": producing("raw"), "down": down})
    cluster.post("/workflows/up/run", {})
    wait_until(
        "the auto run to start",
        lambda: any(r["status"] == "running" for r in runs_of(cluster, "down")),
        20,
        cluster,
    )
    first.kill()
    second = cluster.start(["serve"], "second")
    try:
        second.wait_healthy(cluster.url)
        wait_until(
            "the auto run to finish",
            lambda: runs_of(cluster, "down")[0]["status"] == "succeeded",
            30,
            cluster,
        )
        state = httpx.get(f"{cluster.url}/workflows/down/auto-materialize", timeout=30).json()
        assert state["data"]["inFlight"] == []
        cluster.post("/workflows/up/run", {})  # the claim is free: the next change launches
        wait_until(
            "a second auto run",
            lambda: len([r for r in runs_of(cluster, "down") if r["status"] == "succeeded"]) == 2,
            30,
            cluster,
        )
        assert len(runs_of(cluster, "down")) == 2
    finally:
        cluster.stop()


def test_two_materializers_decide_each_event_once(cluster: Cluster, postgres_database: str) -> None:
    """API, worker, ingress and two materializers on PostgreSQL + Redis, fed a burst of
    upstream productions: one decision per (event, consumer), one launch per consumer; and a
    freshness timer, fired by one of them, once per production."""
    cluster.start(["worker"], "worker")
    cluster.start(["events"], "events")
    chatty = cluster.env | {"APPHUB_LOG_LEVEL": "debug"}
    materializers = [cluster.start(["materializer"], f"materializer-{n}", chatty) for n in (1, 2)]
    on_update = {"autoMaterialize": {"onUpstreamUpdate": True}}
    consumers = {
        f"down-{n}": producing(f"clean-{n}", consumes=("raw",), sleep=4.0, **on_update)
        for n in (1, 2, 3)
    }
    ttl: dict[str, Any] = {"freshness": {"ttlMs": 1500}, "autoMaterialize": {}}
    snapshot = {"snapshot": producing("snap", **ttl)}
    register(cluster, {"up": producing("raw"), **consumers, **snapshot})
    time.sleep(1.0)  # every materializer has heard of the new workflows
    cluster.post("/workflows/snapshot/run", {})
    asyncio.run(run_upstream(cluster, 100))
    wait_until(
        "300 decisions",
        lambda: sum(asyncio.run(decision_outcomes(postgres_database)).values()) >= 300,
        60,
        cluster,
    )
    for slug in consumers:
        wait_until(f"{slug} to go quiet", lambda slug=slug: quiet(cluster, slug), 30, cluster)
    time.sleep(1.0)  # a third run would have been launched by now
    for slug in consumers:
        runs = runs_of(cluster, slug)
        assert 1 <= len(runs) <= 2, (slug, runs)
        assert {run["status"] for run in runs} == {"succeeded"}, [
            (r["errorMessage"], r["context"]) for r in runs
        ]
    outcomes = asyncio.run(decision_outcomes(postgres_database))
    assert outcomes == {"launched": 3, "coalesced": 297}
    for materializer in materializers:
        assert "auto-materialize" in materializer.log_path.read_text(), "a materializer idled"
    expiries = wait_until(
        "an expiry run",
        lambda: [r for r in runs_of(cluster, "snapshot") if r["triggeredBy"] != "manual"],
        30,
        cluster,
    )
    assert {run["trigger"]["reason"] for run in expiries} == {"expiry"}
    events = [run["trigger"]["eventId"] for run in expiries]
    assert len(events) == len(set(events)), "a timer fired twice"


def quiet(cluster: Cluster, slug: str) -> bool:
    """Every run ended and no claim held: a follow-up, if owed, has been launched by now."""
    runs = runs_of(cluster, slug)
    if not runs or any(run["status"] not in ("succeeded", "failed") for run in runs):
        return False
    state = httpx.get(f"{cluster.url}/workflows/{slug}/auto-materialize", timeout=30).json()
    return state["data"]["inFlight"] == []


async def run_upstream(cluster: Cluster, count: int) -> None:
    """`count` runs of `up` at once: as many `asset.produced` events within a second or two."""
    headers = cluster.headers
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post("/workflows/up/run", json={}) for _ in range(count))
        )
    assert Counter(response.status_code for response in responses) == {202: count}


async def decision_outcomes(url: str) -> dict[str, int]:
    database = open_database(url)
    try:
        async with database.read() as connection:
            rows = await connection.execute(
                select(materializer_decisions.c.outcome, func.count())
                .where(materializer_decisions.c.event_type == "asset.produced")
                .group_by(materializer_decisions.c.outcome)
            )
            return {str(outcome): int(count) for outcome, count in rows}
    finally:
        await database.dispose()
