"""The materializer and malformed events, on every backend: one bad event never costs the
others their decisions, and is never retried forever.

Same fixtures as test_materializer.py: `up` produces `raw`, `down` consumes it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from structlog.testing import capture_logs

import apphub.automation.materializer as materializer_module
from apphub.automation.completions import cooldown_event_id
from apphub.automation.ingress import event_row
from apphub.domain.events import EventEnvelope
from apphub.domain.materialize import expiry_due
from apphub.store import events as event_store
from apphub.store.database import Database, open_database
from apphub.store.tables import materializer_events, metadata
from tests.conftest import Hub, open_hub
from tests.integration.test_materializer import (
    ON_UPDATE,
    assets,
    auto_runs,
    automation,
    downstream,
    expiries,
    hub,  # noqa: F401  (the fixture)
    orchestrator_events,
    produce_raw,
    step,
    upstream,
    wait_runs,
)
from tests.runs import register_job, register_workflow, start_run, wait_for_run

END_OF_TIME = "9999-12-31T23:59:59.999Z"
"""A `producedAt` a job may report: any later moment cannot be represented."""


async def handled(database: Database, event_id: str, seconds: float = 10.0) -> None:
    """Wait until the materializer has recorded `event_id` as handled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with database.read() as connection:
            count = await connection.scalar(
                select(func.count())
                .select_from(materializer_events)
                .where(materializer_events.c.event_id == event_id)
            )
        if count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"event {event_id} was not recorded as handled in {seconds}s")


async def store_unhandled(opened: Hub, envelopes: list[EventEnvelope]) -> None:
    """Store events as processed 30 s ago but never handed over (a lost hand-off): the next
    repair pass hands them to the materializer as one batch."""
    received = datetime.now(UTC) - timedelta(seconds=30)
    async with opened.services.database.write() as connection:
        rows = await event_store.insert_events(
            connection, [event_row(envelope, received) for envelope in envelopes]
        )
        await event_store.mark(connection, [row.seq for row in rows], event_store.PROCESSED, None)


# --- A: a production at the end of time, and an event that fails alone ----------------------


def test_an_expiry_that_cannot_be_represented_is_no_timer() -> None:
    """Pure: the window past datetime.max is dropped, a representable one is kept."""
    end = datetime.max.replace(tzinfo=UTC) - timedelta(seconds=1)
    assert expiry_due({"ttlMs": 60_000}, end) == []
    assert expiry_due({"ttlMs": 500, "cadenceMs": 60_000}, end) == [
        ("ttl", end + timedelta(milliseconds=500))
    ]


async def test_a_production_at_the_end_of_time_sets_no_timer_and_still_decides(
    hub: Hub,  # noqa: F811
) -> None:
    """A job reported `producedAt` 9999-12-31 for an asset with a TTL: before, adding the
    window overflowed and the consumer's decision was lost with the batch."""
    api = hub.client
    await upstream(api, freshness={"ttlMs": 60_000}, autoMaterialize={})
    await downstream(api)
    await produce_raw(api, producedAt=END_OF_TIME)
    [run] = await wait_runs(api, 1)
    assert run["status"] == "succeeded"
    assert run["trigger"]["reason"] == "upstream-update"
    # the timers are set in the transaction of the decision: none was, for that production
    assert (await automation(api, "up"))["nextExpiries"] == []
    # while an ordinary production of the same asset does set one
    since = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    await produce_raw(api)
    [timer] = await expiries(api, "up", since)
    assert timer["reason"] == "ttl"


async def test_an_event_that_fails_alone_is_given_up_and_the_batch_kept(
    hub: Hub,  # noqa: F811
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error nobody foresaw (not a database one) in one event of a batch: the others are
    decided, the bad one is recorded as handled with an error log, and repair is done."""
    api = hub.client
    await upstream(api)
    await produce_raw(api)  # before `down` exists: no auto run yet
    await downstream(api)
    original = materializer_module.upstream_change

    def failing(event: Any) -> Any:
        if isinstance(event.payload, dict) and event.payload.get("poison"):
            raise RuntimeError("unforeseen")
        return original(event)

    monkeypatch.setattr(materializer_module, "upstream_change", failing)
    [good] = await orchestrator_events(api, 1)
    poison = good.model_copy(
        update={"id": "poison-event", "payload": {**good.payload, "poison": 1}}
    )
    await store_unhandled(hub, [poison, good])
    materializer = hub.services.materializer()
    await materializer.load_graph()
    with capture_logs() as logs:
        await materializer.repair_once()  # the hub's own repair pass may take them first
        await handled(database, poison.id)
    [run] = await wait_runs(api, 1)
    assert run["trigger"]["eventId"] == good.id
    decisions = (await automation(api))["decisions"]
    assert [decision["eventId"] for decision in decisions] == [good.id]
    assert await materializer.repair_once() == 0  # nothing left to retry
    failures = [entry for entry in logs if entry.get("event_id") == poison.id]
    assert [(entry["log_level"], entry["error_type"]) for entry in failures] == [
        ("error", "RuntimeError")
    ]


# --- B: definition events from anyone --------------------------------------------------------


async def test_definition_events_are_believed_only_from_the_registry(
    hub: Hub,  # noqa: F811
    database: Database,
) -> None:
    """Any service may publish `workflow.definition.*` over POST /events: those are recorded
    as handled and ignored, whatever their payload, and events alongside are decided."""
    api = hub.client
    await upstream(api)
    await produce_raw(api)
    down = await downstream(api)
    forged = []
    for payload in ([1], {"workflowDefinitionId": down["id"]}):
        event = {
            "type": "workflow.definition.updated",
            "source": "some-service",
            "payload": payload,
        }
        published = await api.post("/events", json=event)
        assert published.status_code == 202, published.text
        forged.append(published.json()["data"]["event"]["id"])
    await hub.services.ingress.ingest(await orchestrator_events(api, 1))
    for event_id in forged:
        await handled(database, event_id)
    [run] = await wait_runs(api, 1)
    assert run["trigger"]["reason"] == "upstream-update"


async def test_the_registry_s_definition_event_without_an_object_payload_is_ignored(
    hub: Hub,  # noqa: F811
) -> None:
    """Even from the registry, a payload that is not an object is ignored, not raised on."""
    api = hub.client
    await upstream(api)
    odd = EventEnvelope.model_validate(
        {"type": "workflow.definition.updated", "source": "apphub.registry", "payload": [1]}
    )
    await store_unhandled(hub, [odd])
    materializer = hub.services.materializer()
    await materializer.handle_now([odd.id])  # raised AttributeError before
    assert materializer.graph.policies == {}  # nothing was loaded for it


# --- C: a cooldown's event id ----------------------------------------------------------------


def test_a_cooldown_s_event_id_is_short_and_the_same_for_the_same_cooldown() -> None:
    """Pure: a redelivered cooldown records under the same id; a later one under another."""
    due = datetime(2026, 1, 1, tzinfo=UTC)
    workflow = "0b7f4a52-3f7e-4c43-9f8e-2d9d5f7c1a10"
    first = cooldown_event_id(workflow, "k" * 200, due)
    assert first == cooldown_event_id(workflow, "k" * 200, due)
    assert first.startswith("cooldown:")
    assert len(first) <= 50
    assert first != cooldown_event_id(workflow, "k" * 200, due + timedelta(milliseconds=1))
    assert first != cooldown_event_id(workflow, "k" * 199, due)


async def test_a_long_partition_key_runs_again_when_its_cooldown_ends(
    hub: Hub,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A 180-character key: the cooldown's decision id used to overflow its 200-character
    column on PostgreSQL, and the owed run never ran."""
    api = hub.client
    dynamic = {"type": "dynamic"}
    await register_workflow(api, "up", [step([{"assetId": "raw", "partitioning": dynamic}])])
    produced = {"assetId": "clean", "partitioning": dynamic, "autoMaterialize": ON_UPDATE}
    parameters = {**assets("clean"), "marker": str(tmp_path / "calls"), "succeedOn": 2}
    await register_workflow(api, "down", [step([produced], ("raw",))], defaultParameters=parameters)
    key = "k" * 180
    run = await start_run(api, "up", parameters=assets("raw"), partitionKey=key)
    assert (await wait_for_run(api, run["id"]))["status"] == "succeeded"
    runs = list(reversed(await wait_runs(api, 2, seconds=30)))
    assert [(r["status"], r["partitionKey"]) for r in runs] == [
        ("failed", key),
        ("succeeded", key),
    ]
    decisions = (await automation(api))["decisions"]
    [ended] = [d for d in decisions if d["eventType"] == "materializer.cooldown-ended"]
    assert ended["eventId"].startswith("cooldown:")
    assert ended["outcome"] == "launched"
    assert len(await auto_runs(api)) == 2


# --- the graph: a full rebuild never undoes a workflow reloaded meanwhile --------------------


async def test_a_reload_during_a_full_rebuild_is_kept(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild's snapshot is read before `down` starts consuming `raw`; the reload of
    `down` that lands while the rebuild runs must survive it. PostgreSQL only: there reads
    run side by side; SQLite's one reading connection already orders them."""
    database = open_database(postgres_url)
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    async with database.write() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    try:
        async with open_hub(database, tmp_path) as opened:
            await _reload_during_rebuild(opened, monkeypatch)
    finally:
        await database.dispose()


async def _reload_during_rebuild(opened: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    await register_job(opened.client, "produce", "produce")
    await upstream(opened.client)
    materializer = opened.services.materializer()
    await materializer.load_graph()
    snapshot_read, release = asyncio.Event(), asyncio.Event()
    read_declarations = materializer_module.asset_store.graph_declarations

    async def slow_full_read(connection: Any, workflow_id: str | None = None) -> Any:
        declarations = await read_declarations(connection, workflow_id=workflow_id)
        if workflow_id is None:
            snapshot_read.set()
            await release.wait()
        return declarations

    monkeypatch.setattr(materializer_module.asset_store, "graph_declarations", slow_full_read)
    rebuild = asyncio.create_task(materializer.load_graph())
    await snapshot_read.wait()
    workflow = await downstream(opened.client, ON_UPDATE)
    reload = asyncio.create_task(materializer.reload_workflow(workflow["id"]))
    await asyncio.sleep(0.2)  # unlocked, the reload would finish here, before the rebuild
    release.set()
    await asyncio.gather(rebuild, reload)
    consumers = [policy.workflow_id for policy in materializer.graph.consumers_of("raw")]
    assert consumers == [workflow["id"]]
