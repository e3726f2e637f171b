"""Event ingress throughput, and `/admin/events` page latency over a large log.

    python -m bench.events [--events N] [--log-size N] [--skip-query]

Ingest: events persisted (and processed: frames, hand-off, marked) per second by one
ingress, embedded (SQLite) and on PostgreSQL — in batches of 500 (how the queue consumer
and bulk publishers hand them over), one at a time, and through the Redis queue path
(publisher → saq → `apphub events` worker → stored).
Query: p50/p95 of `GET /admin/events` (through the ASGI app) over --log-size stored events
on PostgreSQL: a filtered first page, a deep cursor page, and a jsonPath page.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from apphub.api.app import create_app
from apphub.automation.ingress_worker import IngressWorker
from apphub.bus.publisher import QueuePublisher
from apphub.domain.events import EventEnvelope
from apphub.domain.paging import encode_cursor
from apphub.engine.services import EngineServices
from apphub.security import OperatorToken, Principal
from apphub.settings import Settings
from apphub.store import events as event_store
from apphub.store.database import open_database
from apphub.store.migrate import migrate
from bench.common import fresh_postgres

BENCH_REDIS = "redis://127.0.0.1:6379/13"
TOKEN = "bench-token"


def envelopes(count: int, source: str = "bench") -> list[EventEnvelope]:
    return [
        EventEnvelope.model_validate(
            {
                "id": str(uuid.uuid4()),
                "type": "bench.event",
                "source": source,
                "payload": {"n": n, "namespace": "flags", "items": [{"qty": n % 7}]},
            }
        )
        for n in range(count)
    ]


async def ingest_rates(label: str, settings: Settings, count: int) -> None:
    services = EngineServices.open(settings)
    await migrate(services.database)
    try:
        batch = envelopes(count)
        started = time.perf_counter()
        for offset in range(0, count, 500):
            await services.ingress.ingest(batch[offset : offset + 500])
        batched = count / (time.perf_counter() - started)
        single = envelopes(min(count, 2000))
        started = time.perf_counter()
        for envelope in single:
            await services.ingress.ingest([envelope])
        one_by_one = len(single) / (time.perf_counter() - started)
    finally:
        await services.close()
    print(
        f"  {label:<34} batches of 500: {batched:>8,.0f} events/s   "
        f"one at a time: {one_by_one:>7,.0f} events/s"
    )


async def queue_rate(settings: Settings, count: int) -> None:
    """Publisher → Redis (saq) → one ingress worker → stored, as in the scaled mode."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(BENCH_REDIS)
    await client.flushdb()
    await client.aclose()
    services = EngineServices.open(settings)
    await migrate(services.database)
    publisher = QueuePublisher(BENCH_REDIS, settings.event_queue_name)
    worker = asyncio.create_task(IngressWorker(settings, services.database, services.ingress).run())
    try:
        batch = envelopes(count, source="queued")
        started = time.perf_counter()
        await asyncio.gather(*(publisher.publish(envelope) for envelope in batch))
        while True:
            async with services.database.read() as connection:
                stored = (await event_store.counts_by_status(connection)).get("processed", 0)
            if stored >= count:
                break
            await asyncio.sleep(0.02)
        rate = count / (time.perf_counter() - started)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await publisher.close()
        await services.close()
    print(
        f"  {'PostgreSQL, via Redis queue':<34} {rate:>8,.0f} events/s "
        f"(concurrency {settings.event_ingress_concurrency})"
    )


LOAD = """
INSERT INTO workflow_events (id, type, source, occurred_at, received_at, payload, severity,
                             status)
SELECT 'bulk-' || n,
       CASE WHEN n % 10 = 0 THEN 'metastore.record.updated' ELSE 'bench.event' END,
       CASE WHEN n % 3 = 0 THEN 'metastore.api' ELSE 'bench' END,
       now() - (n || ' seconds')::interval,
       now(),
       jsonb_build_object('n', n, 'namespace', CASE WHEN n % 100 = 0 THEN 'flags' ELSE 'x' END,
                          'count', n % 50),
       'info', 'processed'
FROM generate_series(1, :size) AS n
"""


async def query_latency(size: int) -> None:
    url = await fresh_postgres("apphub_bench_events")
    database = open_database(url)
    await migrate(database)
    started = time.perf_counter()
    async with database.write() as connection:
        await connection.execute(text(LOAD), {"size": size})
        await connection.execute(text("ANALYZE workflow_events"))
    print(
        f"\n/admin/events on PostgreSQL with {size:,} events "
        f"(loaded in {time.perf_counter() - started:.1f} s)"
    )
    settings = Settings(
        database_url=url,
        data_dir=Path(tempfile.mkdtemp()),
        operator_tokens=(OperatorToken(TOKEN, Principal("bench", None)),),
    )
    app = create_app(settings, database=database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://b", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as api:
            deep = await _cursor_at(database, size // 2)
            cases: list[tuple[str, dict[str, Any]]] = [
                ("first page, type filter", {"type": "metastore.record.updated"}),
                ("first page, source filter", {"source": "metastore.api"}),
                ("deep cursor page (middle of the log)", {"cursor": deep}),
                ("deep cursor page, type filter", {"type": "bench.event", "cursor": deep}),
                ("first page, jsonPath predicate", {"jsonPath": "$.count > 45"}),
                ("first page, jsonPath path", {"jsonPath": '$ ? (@.namespace == "flags")'}),
            ]
            for label, query in cases:
                timings = await _time(api, query)
                print(f"  {label:<40} p50 {timings[0]:>6.1f} ms   p95 {timings[1]:>6.1f} ms")
    await database.dispose()


async def _cursor_at(database: Any, position: int) -> str:
    """The cursor a client holds after paging down to `position` (newest first)."""
    async with database.read() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT occurred_at, id FROM workflow_events "
                    "ORDER BY occurred_at DESC, id DESC OFFSET :position LIMIT 1"
                ),
                {"position": position},
            )
        ).first()
    return encode_cursor({"at": row.occurred_at.isoformat(), "id": row.id})


async def _time(api: httpx.AsyncClient, query: dict[str, Any]) -> tuple[float, float]:
    samples = []
    for attempt in range(40):
        started = time.perf_counter()
        response = await api.get("/admin/events", params={"limit": 100} | query)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text
        if attempt >= 5:  # warm-up
            samples.append(elapsed)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--log-size", type=int, default=1_000_000)
    parser.add_argument("--skip-query", action="store_true")
    args = parser.parse_args()
    print(f"event ingest, {args.events:,} events, one ingress")
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{Path(folder) / 'e.db'}", data_dir=Path(folder)
        )
        await ingest_rates("embedded (SQLite)", settings, args.events)
    url = await fresh_postgres("apphub_bench_ingest")
    await ingest_rates("PostgreSQL", Settings(database_url=url), args.events)
    url = await fresh_postgres("apphub_bench_queue")
    await queue_rate(Settings(database_url=url, redis_url=BENCH_REDIS), min(args.events, 5000))
    if not args.skip_query:
        await query_latency(args.log_size)


if __name__ == "__main__":
    asyncio.run(main())
