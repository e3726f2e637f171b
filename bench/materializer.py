"""The asset materializer: reaction latency, burst throughput, and decision cost at scale.

    python -m bench.materializer [--events N] [--embedded-only | --scaled-only] [--skip-graph]

Reaction: an upstream workflow `up` produces `bench.raw`; `down` consumes it and
auto-materializes on upstream update. Each round runs `up` once and waits for the `down`
run it causes to end; the figure is that run's `startedAt` minus the upstream production's
recorded `producedAt` (both read from the database afterwards), over --events rounds.
Embedded is SQLite + in-process queues; scaled is PostgreSQL + Redis (saq queues, pub/sub),
first with the worker, the ingress and the materializer in this one process, talking through
Redis, then as deployed: `apphub serve --no-workers`, `apphub worker` and `apphub
materializer` as separate processes.
Burst: 1,000 `asset.produced` events for one consumer, handed over at once: decisions
recorded per second (one launch, the rest coalesced).
Graph: 10,000 workflows and 20,000 assets, built as the materializer builds its graph: build
time, memory, and the pure per-event decision time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from apphub.automation.auto_runs import TRIGGERED_BY
from apphub.automation.ingress_worker import IngressWorker
from apphub.bus.broadcast import Subscription
from apphub.bus.frames import FRAMES_CHANNEL
from apphub.domain.asset_graph import Declaration, build_graph
from apphub.domain.base import iso_ms
from apphub.domain.events import EventEnvelope
from apphub.domain.jobs import JobSpec
from apphub.domain.materialize import WorkflowState, decide_upstream_update
from apphub.domain.requests import WorkflowRunRequest
from apphub.domain.workflows import WorkflowSpec
from apphub.engine import registry
from apphub.engine.runs import start_workflow_run
from apphub.engine.services import EngineServices
from apphub.engine.worker import Worker
from apphub.logs import configure_logging
from apphub.settings import Settings
from apphub.store import workflows as workflow_store
from apphub.store.database import Database, open_database
from apphub.store.migrate import migrate
from apphub.store.tables import materializer_decisions, workflow_run_step_assets, workflow_runs
from bench.common import fresh_postgres, latency_line

BENCH_REDIS = "redis://127.0.0.1:6379/12"
REPO_ROOT = str(Path(__file__).resolve().parents[1])
"""On the processes' PYTHONPATH, so the worker imports `bench.noop_jobs`."""
RAW, CLEAN = "bench.raw", "bench.clean"
DAGSTER = "Dagster's automation: a 30 s tick plus run launch, about 20-60 s"


def workflows() -> list[WorkflowSpec]:
    up = {
        "id": "make",
        "jobSlug": "produce",
        "produces": [{"assetId": RAW}],
        "parameters": {"assets": [{"assetId": RAW}]},
    }
    down = {
        "id": "make",
        "jobSlug": "produce",
        "consumes": [{"assetId": RAW}],
        "produces": [{"assetId": CLEAN, "autoMaterialize": {"onUpstreamUpdate": True}}],
        "parameters": {"assets": [{"assetId": CLEAN}]},
    }
    return [
        WorkflowSpec.model_validate({"slug": slug, "name": slug, "steps": [step]})
        for slug, step in (("up", up), ("down", down))
    ]


@asynccontextmanager
async def running_stack(settings: Settings, embedded: bool) -> AsyncIterator[EngineServices]:
    """Worker, ingress and materializer in this process, as `apphub serve` runs them."""
    services = EngineServices.open(settings)
    await migrate(services.database)
    job = JobSpec.model_validate(
        {"slug": "produce", "name": "produce", "entryPoint": "bench.noop_jobs:produce"}
    )
    await registry.upsert_job(services.database, job)
    for spec in workflows():
        await registry.upsert_workflow(services.database, spec)
    loops = [
        Worker(services, embedded=embedded).run(),
        IngressWorker(settings, services.database, services.ingress).run(),
        services.materializer().run(),
    ]
    tasks = [asyncio.create_task(loop) for loop in loops]
    await asyncio.sleep(0.5)  # the materializer loads its graph
    try:
        yield services
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await services.close()


async def reaction_latencies(services: EngineServices, rounds: int) -> list[float]:
    """Run `up` `rounds` times, one auto run of `down` each; producedAt → startedAt in ms.

    Each round waits for the auto run's `workflow.run.succeeded` frame (no polling, which
    would compete with the materializer for the one SQLite connection).
    """
    async with services.broadcaster.subscribe(FRAMES_CHANNEL) as frames:
        for _ in range(rounds):
            await start_workflow_run(services, "up", WorkflowRunRequest())
            await _auto_run_succeeded(frames)
    return await recorded_latencies(services.database)


async def recorded_latencies(database: Database) -> list[float]:
    """Each upstream production's `producedAt` against the next auto run's `startedAt`, ms."""
    async with database.read() as connection:
        produced = [
            row[0]
            for row in await connection.execute(
                select(workflow_run_step_assets.c.produced_at)
                .where(workflow_run_step_assets.c.asset_key == RAW)
                .order_by(workflow_run_step_assets.c.produced_at)
            )
        ]
        started = [
            row[0]
            for row in await connection.execute(
                select(workflow_runs.c.started_at)
                .where(workflow_runs.c.triggered_by == "asset-materializer")
                .order_by(workflow_runs.c.started_at)
            )
        ]
    return [(s - p).total_seconds() * 1000 for p, s in zip(produced, started, strict=True)]


async def _auto_run_succeeded(frames: Subscription) -> None:
    while True:
        message = await frames.get(timeout=30)
        if message is None:
            raise RuntimeError("no auto run succeeded within 30 s")
        data = message["data"]
        if message["type"] == "workflow.run.succeeded" and data["triggeredBy"] == TRIGGERED_BY:
            return


async def burst_rate(services: EngineServices, count: int) -> float:
    """Hand `count` upstream productions of `up` over at once (as the orchestrator stores
    them); decisions recorded per second."""
    async with services.database.read() as connection:
        up = await workflow_store.get_workflow(connection, "up")
        before = await connection.scalar(select(func.count()).select_from(materializer_decisions))
    assert up is not None
    now = datetime.now(UTC)
    burst = [
        EventEnvelope.model_validate(
            {
                "type": "asset.produced",
                "source": "apphub.orchestrator",
                "payload": {
                    "assetId": RAW,
                    "workflowDefinitionId": up.id,
                    "producedAt": iso_ms(now + timedelta(seconds=1)),
                },
            }
        )
        for _ in range(count)
    ]
    started = time.perf_counter()
    await services.ingress.ingest(burst)
    deadline = started + 120
    while time.perf_counter() < deadline:
        async with services.database.read() as connection:
            total = await connection.scalar(
                select(func.count()).select_from(materializer_decisions)
            )
        if total - before >= count:
            return count / (time.perf_counter() - started)
        await asyncio.sleep(0.01)
    raise RuntimeError(f"only {total - before} of {count} decisions in 120 s")


# --- scaled, as deployed: one process per role ------------------------------------------------


async def bench_processes(rounds: int) -> None:
    """API, worker and materializer as separate processes on PostgreSQL + Redis."""
    print("\nscaled, as deployed: apphub serve --no-workers, worker, materializer processes")
    await _flush_redis()
    url = await fresh_postgres()
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        env = os.environ | {
            "APPHUB_DATABASE_URL": url,
            "REDIS_URL": BENCH_REDIS,
            "APPHUB_PORT": str(port),
            "APPHUB_AUTH_DISABLED": "1",
            "APPHUB_LOG_LEVEL": "warning",
            "APPHUB_DATA_DIR": folder,
            "PYTHONPATH": REPO_ROOT,
        }
        processes = _start(env, folder)
        database = open_database(url)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
                await _register_over_http(api)
                await asyncio.sleep(1.0)  # the materializer hears of the new workflows
                for round_number in range(1, rounds + 1):
                    assert (await api.post("/workflows/up/run", json={})).status_code == 202
                    await _succeeded_auto_runs(database, round_number)
            _print_latencies(await recorded_latencies(database))
        finally:
            _stop(processes)
            await database.dispose()


def _start(env: dict[str, str], folder: str) -> list[subprocess.Popen[bytes]]:
    roles = [["serve", "--no-workers"], ["worker"], ["materializer"]]
    return [
        subprocess.Popen([sys.executable, "-m", "apphub", *role], env=env, cwd=folder)
        for role in roles
    ]


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=30)


async def _register_over_http(api: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if (await api.get("/health")).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("apphub did not start")
        await asyncio.sleep(0.1)
    job = {"slug": "produce", "name": "produce", "entryPoint": "bench.noop_jobs:produce"}
    assert (await api.post("/jobs", json=job)).status_code == 201
    for spec in workflows():
        body = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        response = await api.post("/workflows", json=body)
        assert response.status_code == 201, response.text


async def _succeeded_auto_runs(database: Database, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with database.read() as connection:
            done = await connection.scalar(
                select(func.count()).where(
                    workflow_runs.c.triggered_by == "asset-materializer",
                    workflow_runs.c.status == "succeeded",
                )
            )
        if done >= count:
            return
        await asyncio.sleep(0.005)
    raise RuntimeError(f"auto run {count} did not succeed in 30 s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _flush_redis() -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(BENCH_REDIS)
    await client.flushdb()
    await client.aclose()


def _print_latencies(latencies: list[float]) -> None:
    label = "reaction, upstream producedAt -> downstream startedAt"
    print(latency_line(label, latencies, "events"))


async def bench_mode(label: str, settings: Settings, embedded: bool, rounds: int) -> None:
    print(f"\n{label}")
    async with running_stack(settings, embedded) as services:
        _print_latencies(await reaction_latencies(services, rounds))
        rate = await burst_rate(services, 1000)
        print(f"  burst of 1,000 events for one consumer: {rate:,.0f} decisions/s")


# --- the graph at scale ----------------------------------------------------------------------


def synthetic_declarations(workflows: int, assets: int, seed: int = 7) -> list[Declaration]:
    """Workflow i produces assets 2i and 2i+1 and consumes two assets of earlier workflows."""
    rng = random.Random(seed)
    per_workflow = assets // workflows
    rows: list[Declaration] = []
    block = {"onUpstreamUpdate": True, "priority": None, "parameterDefaults": None, "enabled": True}
    for index in range(workflows):
        workflow_id = f"00000000-0000-0000-0000-{index:012d}"
        slug = f"workflow-{index}"
        for n in range(per_workflow):
            key = f"asset.{index * per_workflow + n}"
            rows.append(Declaration(workflow_id, slug, "build", "produces", key, None, block, key))
        if index:
            for upstream in rng.sample(range(index * per_workflow), min(2, index * per_workflow)):
                key = f"asset.{upstream}"
                rows.append(
                    Declaration(workflow_id, slug, "build", "consumes", key, None, None, key)
                )
    return rows


def bench_graph(workflows: int, assets: int) -> None:
    print(f"\ngraph of {workflows:,} workflows and {assets:,} assets")
    rows = synthetic_declarations(workflows, assets)
    builds = []
    for _ in range(3):
        started = time.perf_counter()
        graph = build_graph(rows)
        builds.append(time.perf_counter() - started)
    gc.collect()
    tracemalloc.start()
    measured = build_graph(rows)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del measured
    build_ms = statistics.median(builds) * 1000
    print(f"  build: {build_ms:.0f} ms (median of 3) for {len(rows):,} declarations")
    print(f"  memory: the graph holds {size / 2**20:.1f} MiB (tracemalloc)")
    rng = random.Random(3)
    now = datetime.now(UTC)
    keys = [f"asset.{rng.randrange(assets)}" for _ in range(20_000)]
    states = {policy: WorkflowState() for policy in graph.policies}
    started = time.perf_counter()
    decided = sum(len(decide_upstream_update(graph, key, None, now, states, now)) for key in keys)
    per_event = (time.perf_counter() - started) / len(keys)
    print(
        f"  decide: {per_event * 1e6:.1f} µs per event (pure), "
        f"{decided / len(keys):.1f} consumers per asset on average"
    )
    workflow_id = next(iter(graph.policies))
    replacement = [row for row in rows if row.workflow_id == workflow_id]
    started = time.perf_counter()
    for _ in range(1000):
        graph.replace_workflow(workflow_id, replacement)
    per_change = (time.perf_counter() - started) / 1000
    print(f"  follow one workflow's definition change: {per_change * 1e6:.0f} µs")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--embedded-only", action="store_true")
    parser.add_argument("--scaled-only", action="store_true")
    parser.add_argument("--skip-graph", action="store_true")
    args = parser.parse_args()
    configure_logging("warning", "console")
    print("apphub asset materializer benchmark")
    print(f"reference: {DAGSTER}")
    if not args.scaled_only:
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(
                database_url=f"sqlite+aiosqlite:///{Path(folder) / 'b.db'}", data_dir=Path(folder)
            )
            await bench_mode("embedded: SQLite + in-process queues", settings, True, args.events)
    if not args.embedded_only:
        await _flush_redis()
        settings = Settings(database_url=await fresh_postgres(), redis_url=BENCH_REDIS)
        label = "scaled, in one process: PostgreSQL + Redis (saq, pub/sub)"
        await bench_mode(label, settings, False, args.events)
        await bench_processes(args.events)
    if not args.skip_graph:
        bench_graph(10_000, 20_000)


if __name__ == "__main__":
    asyncio.run(main())
