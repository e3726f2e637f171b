"""Event triggers: from an event published over HTTP to the run it triggers, running.

    python -m bench.triggers [--events N] [--embedded-only | --scaled-only]

Each round publishes one `metastore.record.updated` event with `POST /events` (as a service
would) and waits for the run its trigger launches to succeed; the figure is the run's
`startedAt` minus the moment the request was sent. Beside it, like with like in the same
stack: `POST /workflows/{slug}/run` to the run's `startedAt`. The difference is what the
trigger path costs (ingress, trigger queue, predicates, templates, the delivery row).
Embedded is SQLite + in-process queues; scaled is PostgreSQL + Redis with every worker in
this one process, talking through Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from apphub.api.app import create_app
from apphub.bus.broadcast import Subscription
from apphub.bus.frames import FRAMES_CHANNEL
from apphub.domain.base import parse_iso
from apphub.engine.services import EngineServices
from apphub.logs import configure_logging
from apphub.security import OperatorToken, Principal
from apphub.settings import Settings
from bench.common import fresh_postgres, latency_line, percentile

BENCH_REDIS = "redis://127.0.0.1:6379/13"
TOKEN = "bench-token"
SLUG = "on-record"


@asynccontextmanager
async def running_hub(
    settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, EngineServices]]:
    """The app with every worker in this process, as `apphub serve` runs it."""
    app = create_app(settings, workers=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:
            yield client, app.state.apphub.services


async def define(client: httpx.AsyncClient) -> None:
    job = {"slug": "noop", "name": "noop", "entryPoint": "bench.noop_jobs:noop"}
    workflow = {"slug": SLUG, "name": SLUG, "steps": [{"id": "sync", "jobSlug": "noop"}]}
    trigger = {
        "name": "record updated",
        "eventType": "metastore.record.updated",
        "predicates": [{"path": "$.payload.namespace", "operator": "equals", "value": "sales"}],
        "parameterTemplate": {"record": "{{ event.payload.key }}"},
    }
    for path, body in (("/jobs", job), ("/workflows", workflow)):
        response = await client.post(path, json=body)
        response.raise_for_status()
    (await client.post(f"/workflows/{SLUG}/triggers", json=trigger)).raise_for_status()


async def rounds(
    client: httpx.AsyncClient, frames: Subscription, count: int, *, by_event: bool
) -> list[float]:
    """Send, wait for the run to succeed, repeat; request sent → run started, in ms."""
    sent: list[datetime] = []
    for n in range(count):
        sent.append(datetime.now(UTC))
        if by_event:
            event = {
                "type": "metastore.record.updated",
                "source": "metastore.api",
                "payload": {"namespace": "sales", "key": f"r{n}"},
            }
            response = await client.post("/events", json=event)
        else:
            response = await client.post(f"/workflows/{SLUG}/run", json={})
        response.raise_for_status()
        await succeeded(frames)
    runs = (await client.get(f"/workflows/{SLUG}/runs?limit=50")).json()["data"]
    while len(runs) < count:  # older pages
        more = await client.get(f"/workflows/{SLUG}/runs?limit=50&offset={len(runs)}")
        runs += more.json()["data"]
    started = sorted(parse_iso(run["startedAt"]) for run in runs[:count])
    return [(s - t).total_seconds() * 1000 for t, s in zip(sent, started, strict=True)]


async def succeeded(frames: Subscription) -> None:
    while True:
        message = await frames.get(timeout=30)
        if message is None:
            raise RuntimeError("no run succeeded within 30 s")
        if message["type"] == "workflow.run.succeeded":
            return


async def bench_mode(title: str, settings: Settings, count: int) -> None:
    print(title)
    async with running_hub(settings) as (client, services):
        await define(client)
        await asyncio.sleep(0.3)  # the trigger worker and the scheduler are up
        async with services.broadcaster.subscribe(FRAMES_CHANNEL) as frames:
            manual = await rounds(client, frames, count, by_event=False)
            triggered = await rounds(client, frames, count, by_event=True)
        print(latency_line("POST /workflows/{slug}/run -> run started", manual))
        print(latency_line("POST /events -> triggered run started", triggered))
        overhead = percentile(triggered, 0.5) - percentile(manual, 0.5)
        print(f"  the trigger path adds {overhead:.1f} ms at the median")


def settings_for(database_url: str, folder: Path, redis_url: str = "inline") -> Settings:
    tokens = (OperatorToken(TOKEN, Principal("bench", None)),)
    return Settings(
        database_url=database_url,
        data_dir=folder,
        redis_url=redis_url,
        operator_tokens=tokens,
        log_level="warning",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--embedded-only", action="store_true")
    parser.add_argument("--scaled-only", action="store_true")
    args = parser.parse_args()
    configure_logging("warning", "console")
    print("apphub event trigger benchmark")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if not args.scaled_only:
            url = f"sqlite+aiosqlite:///{folder / 'b.db'}"
            await bench_mode(
                "embedded: SQLite + in-process queues", settings_for(url, folder), args.events
            )
        if not args.embedded_only:
            await aioredis.from_url(BENCH_REDIS).flushdb()
            scaled = settings_for(await fresh_postgres(), folder, BENCH_REDIS)
            await bench_mode("scaled, in one process: PostgreSQL + Redis", scaled, args.events)


if __name__ == "__main__":
    asyncio.run(main())
