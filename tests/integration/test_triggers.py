"""Event triggers on every backend, driven over HTTP and the event bus as a service would.

Events are published with `POST /events`; outcomes are judged by the recorded deliveries and
runs, never by timing alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from apphub.automation.ingress import event_row
from apphub.automation.trigger_deliveries import retry
from apphub.domain.events import EventEnvelope
from apphub.store import events as event_store
from apphub.store import triggers as trigger_store
from apphub.store.database import Database
from apphub.store.tables import workflow_event_triggers
from tests.conftest import READER_TOKEN, Hub, bearer, open_hub
from tests.runs import register_job, register_workflow, wait_for, wait_for_run

SLUG = "sync"
PAUSE_MS = 3000


@pytest.fixture
async def api(database: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = {
        "trigger_error_threshold": 2,
        "trigger_error_window_ms": 60_000,
        "trigger_pause_ms": PAUSE_MS,
    }
    async with open_hub(database, tmp_path, **settings) as hub:
        await register_job(hub.client, "emit", "emit")
        yield hub.client


async def workflow(api: httpx.AsyncClient, **fields: Any) -> None:
    await register_workflow(api, SLUG, [{"id": "sync", "jobSlug": "emit"}], **fields)


async def gated_workflow(api: httpx.AsyncClient, gate: Path) -> None:
    """Its runs stay in flight until `gate` exists (or 30 s): no race with a loaded machine."""
    await register_job(api, "gated", "gated")
    steps = [{"id": "sync", "jobSlug": "gated"}]
    await register_workflow(api, SLUG, steps, defaultParameters={"gate": str(gate)})


async def trigger(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "on update", "eventType": "metastore.record.updated", **fields}
    response = await api.post(f"/workflows/{SLUG}/triggers", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["data"]
    return created


async def publish(api: httpx.AsyncClient, event_id: str | None = None, **payload: Any) -> str:
    event_id = event_id or str(uuid.uuid4())
    body = {
        "id": event_id,
        "type": "metastore.record.updated",
        "source": "metastore.api",
        "payload": payload,
    }
    response = await api.post("/events", json=body)
    assert response.status_code == 202, response.text
    return event_id


async def deliveries(api: httpx.AsyncClient, trigger_id: str, **query: Any) -> list[Any]:
    response = await api.get(f"/workflows/{SLUG}/triggers/{trigger_id}/deliveries", params=query)
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["data"]
    return found


async def delivery_of(
    api: httpx.AsyncClient,
    trigger_id: str,
    event_id: str,
    done: Callable[[dict[str, Any]], bool] = lambda d: d["status"] != "matched",
    seconds: float = 20.0,
) -> dict[str, Any]:
    path = f"/workflows/{SLUG}/triggers/{trigger_id}/deliveries?eventId={event_id}"
    found = await wait_for(api, path, lambda rows: bool(rows) and done(rows[0]), seconds)
    delivery: dict[str, Any] = found[0]
    return delivery


async def runs(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await api.get(f"/workflows/{SLUG}/runs")).json()["data"]
    return found


async def settled(api: httpx.AsyncClient, trigger_id: str, event_id: str) -> None:
    """The worker has decided this event (a marker event published after the one judged)."""
    await delivery_of(api, trigger_id, event_id)


async def test_a_matching_event_launches_one_run_with_templated_parameters(
    api: httpx.AsyncClient,
) -> None:
    await workflow(api)
    created = await trigger(
        api,
        predicates=[
            {"path": "$.payload.namespace", "operator": "equals", "value": "Feature-Flags"},
            {"path": "$.source", "operator": "in", "values": ["metastore.api", "metastore.worker"]},
        ],
        parameterTemplate={
            "key": "{{ event.payload.key | upcase }}",
            "version": "{{ event.payload.version }}",
            "note": "v{{ event.payload.version }} of {{ event.payload.key }}",
        },
        runKeyTemplate="sync-{{ parameters.key | downcase }}-{{ parameters.version }}",
    )
    assert created["version"] == 1
    assert created["status"] == "active"
    other = await publish(api, namespace="billing", key="plan", version=1)
    matching = await publish(api, namespace="feature-flags", key="search", version=12)
    await publish(api, event_id=matching, namespace="feature-flags", key="search", version=12)
    delivery = await delivery_of(api, created["id"], matching)
    assert delivery["status"] == "launched", delivery
    run = await wait_for_run(api, delivery["workflowRunId"])
    assert run["status"] == "succeeded", run
    assert run["parameters"] == {"key": "SEARCH", "version": 12, "note": "v12 of search"}
    assert run["runKey"] == "sync-search-12"
    assert run["triggeredBy"] == "event-trigger"
    trigger_payload = run["trigger"]
    assert trigger_payload["type"] == "event"
    assert trigger_payload["event"]["id"] == matching
    assert trigger_payload["event"]["type"] == "metastore.record.updated"
    assert trigger_payload["event"]["source"] == "metastore.api"
    assert trigger_payload["triggerId"] == created["id"]
    assert trigger_payload["triggerName"] == "on update"
    assert trigger_payload["deliveryId"] == delivery["id"]
    assert trigger_payload["dedupeKey"] is None
    assert await deliveries(api, created["id"], eventId=other) == []
    all_deliveries = await deliveries(api, created["id"])
    assert [d["eventId"] for d in all_deliveries] == [matching]
    assert [r["id"] for r in await runs(api)] == [run["id"]]


async def test_an_idempotency_key_launches_once_per_ttl(api: httpx.AsyncClient) -> None:
    await workflow(api)
    created = await trigger(
        api, idempotencyKeyExpression="event.payload.key", idempotencyTtlMs=3000
    )
    first = await publish(api, key="a")
    assert (await delivery_of(api, created["id"], first))["status"] == "launched"
    started = time.monotonic()
    again = await publish(api, key="A")  # keys are rendered text: "A" is another key
    same = await publish(api, key="a")
    other = await publish(api, key="b")
    assert (await delivery_of(api, created["id"], again))["status"] == "launched"
    duplicate = await delivery_of(api, created["id"], same)
    assert duplicate["status"] == "skipped", duplicate
    assert duplicate["dedupeKey"] == "a"
    assert duplicate["workflowRunId"] is None
    assert "idempotency" in duplicate["lastError"]
    assert (await delivery_of(api, created["id"], other))["status"] == "launched"
    await asyncio.sleep(max(0.0, 3.1 - (time.monotonic() - started)))
    later = await publish(api, key="a")
    relaunched = await delivery_of(api, created["id"], later)
    assert relaunched["status"] == "launched", relaunched
    assert len(await runs(api)) == 4


async def test_a_full_throttle_window_throttles_then_launches(api: httpx.AsyncClient) -> None:
    await workflow(api)
    created = await trigger(api, throttleCount=1, throttleWindowMs=2500)
    first = await publish(api, n=1)
    second = await publish(api, n=2)
    launched = await delivery_of(api, created["id"], first)
    throttled = await delivery_of(api, created["id"], second)
    assert launched["status"] == "launched"
    assert throttled["status"] == "throttled", throttled
    assert throttled["nextAttemptAt"] is not None
    assert "throttleCount" in throttled["lastError"]
    retried = await delivery_of(api, created["id"], second, lambda d: d["status"] == "launched")
    assert retried["attempts"] == 2
    assert retried["nextAttemptAt"] is None
    second_run = await wait_for_run(api, retried["workflowRunId"])
    # The first delivery was written at its launch; the retry came once the window had room.
    gap = _ms(second_run["createdAt"]) - _ms(launched["createdAt"])
    assert gap >= 2500, gap


async def test_max_concurrency_waits_for_the_run_in_flight(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"  # the first run stays in flight until the test opens it
    await gated_workflow(api, gate)
    created = await trigger(api, maxConcurrency=1)
    first = await publish(api, n=1)
    launched = await delivery_of(api, created["id"], first)
    second = await publish(api, n=2)
    throttled = await delivery_of(api, created["id"], second)
    assert throttled["status"] == "throttled", throttled
    assert "maxConcurrency" in throttled["lastError"]
    gate.touch()
    retried = await delivery_of(api, created["id"], second, lambda d: d["status"] == "launched")
    first_run = await wait_for_run(api, launched["workflowRunId"])
    second_run = await wait_for_run(api, retried["workflowRunId"])
    # Launched when the first run ended (its end event), long before the 10 s backoff.
    assert second_run["createdAt"] >= first_run["completedAt"]
    assert _ms(second_run["createdAt"]) - _ms(first_run["completedAt"]) < 8000


async def test_failing_launches_pause_the_trigger_then_it_resumes(api: httpx.AsyncClient) -> None:
    await workflow(
        api,
        parametersSchema={"type": "object", "properties": {"count": {"type": "integer"}}},
    )
    created = await trigger(api, parameterTemplate={"count": "{{ event.payload.count }}"})
    for _ in range(2):  # EVENT_TRIGGER_ERROR_THRESHOLD is 2 here
        failed = await delivery_of(api, created["id"], await publish(api, count="many"))
        assert failed["status"] == "failed", failed
        assert "count" in failed["lastError"]
    shown = (await api.get(f"/workflows/{SLUG}/triggers/{created['id']}")).json()["data"]
    assert shown["pausedUntil"] is not None
    health = (await api.get("/admin/event-health")).json()["data"]
    assert [p["triggerId"] for p in health["pausedTriggers"]] == [created["id"]]
    assert health["triggers"]["deliveries"]["failed"] == 2
    skipped = await delivery_of(api, created["id"], await publish(api, count=1))
    assert skipped["status"] == "skipped"
    assert "paused" in skipped["lastError"]
    await asyncio.sleep(PAUSE_MS / 1000 + 0.1)
    resumed = await delivery_of(api, created["id"], await publish(api, count=3))
    assert resumed["status"] == "launched", resumed
    run = await wait_for_run(api, resumed["workflowRunId"])
    assert run["parameters"] == {"count": 3}
    prometheus = (await api.get("/metrics/prometheus")).text
    assert 'apphub_event_trigger_deliveries_total{outcome="failed"} 2.0' in prometheus
    assert 'apphub_event_trigger_deliveries_total{outcome="launched"} 1.0' in prometheus


async def test_a_disabled_trigger_does_nothing_until_enabled(api: httpx.AsyncClient) -> None:
    await workflow(api)
    off = await trigger(api, status="disabled")
    on = await trigger(api, name="marker", eventSource="metastore.api")
    ignored = await publish(api, n=1)
    await settled(api, on["id"], ignored)  # the worker has decided this event
    assert await deliveries(api, off["id"]) == []
    enabled = await api.patch(f"/workflows/{SLUG}/triggers/{off['id']}", json={"status": "active"})
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["data"]["version"] == 2
    counted = await publish(api, n=2)
    assert (await delivery_of(api, off["id"], counted))["status"] == "launched"
    assert await deliveries(api, off["id"], eventId=ignored) == []


async def test_a_source_filter_and_a_delete(api: httpx.AsyncClient) -> None:
    await workflow(api)
    elsewhere = await trigger(api, eventSource="metastore.worker")
    marker = await trigger(api, name="marker")
    event = await publish(api, n=1)
    await settled(api, marker["id"], event)
    assert await deliveries(api, elsewhere["id"]) == []
    path = f"/workflows/{SLUG}/triggers/{elsewhere['id']}"
    assert (await api.delete(path)).status_code == 204
    assert (await api.get(path)).status_code == 404
    assert (await api.delete(path)).status_code == 404
    assert (await api.get(f"{path}/deliveries")).status_code == 404
    listed = (await api.get(f"/workflows/{SLUG}/triggers")).json()["data"]
    assert [t["id"] for t in listed] == [marker["id"]]


BAD_TRIGGERS = [
    (
        {"predicates": [{"path": "$.payload.n", "operator": "gt", "value": "many"}]},
        "predicates[0].value",
    ),
    (
        {"predicates": [{"path": "$.payload.n", "operator": "regex", "value": "(unclosed"}]},
        "predicates[0].value",
    ),
    ({"predicates": [{"path": "payload.n", "operator": "exists"}]}, "predicates[0].path"),
    (
        {"predicates": [{"path": "$.payload.n", "operator": "gt", "value": 10**400}]},
        "predicates[0].value",
    ),
    (
        {"predicates": [{"path": "$.payload.n", "operator": "lte", "value": "1e999"}]},
        "predicates[0].value",
    ),
    ({"predicates": [{"path": "$.a", "operator": "equals"}]}, "predicates[0]"),
    ({"predicates": [{"path": "$.a", "operator": "in", "values": []}]}, "predicates[0].values"),
    ({"predicates": [{"path": "$.a", "operator": "exists"}] * 26}, "predicates"),
    ({"parameterTemplate": {"k": "{{ event.payload.k | shout }}"}}, "parameterTemplate.k"),
    ({"parameterTemplate": {"k": "{% if event.payload.k %}x"}}, "parameterTemplate.k"),
    ({"runKeyTemplate": "{{ event.id"}, "runKeyTemplate"),
    ({"idempotencyKeyExpression": "x" * 201}, "idempotencyKeyExpression"),
    (
        {"parameterTemplate": {"k": "{{ event.payload.missing }}"}, "sampleEvent": {"payload": {}}},
        "parameterTemplate.k",
    ),
    ({"eventType": "Metastore.Updated"}, "eventType"),
    ({"throttleCount": 1}, "body"),
    ({"maxConcurrency": 1001}, "maxConcurrency"),
    ({"throttleWindowMs": 86_400_001, "throttleCount": 1}, "throttleWindowMs"),
    ({"retries": 3}, "retries"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_TRIGGERS)
async def test_bad_triggers_are_refused_and_change_nothing(
    api: httpx.AsyncClient, fields: dict[str, Any], field: str
) -> None:
    await workflow(api)
    body = {"name": "bad", "eventType": "metastore.record.updated", **fields}
    response = await api.post(f"/workflows/{SLUG}/triggers", json=body)
    assert response.status_code == 400, response.text
    problems = response.json()["detail"]["errors"]
    assert problems[0]["field"] == field, problems
    assert (await api.get(f"/workflows/{SLUG}/triggers")).json()["data"] == []


async def test_a_sample_event_passes_templates_that_use_only_what_it_has(
    api: httpx.AsyncClient,
) -> None:
    await workflow(api)
    created = await trigger(
        api,
        parameterTemplate={"k": "{{ event.payload.k }}"},
        runKeyTemplate="{{ parameters.k }}",
        sampleEvent={"payload": {"k": "v"}},
    )
    path = f"/workflows/{SLUG}/triggers/{created['id']}"
    bad = await api.patch(
        path,
        json={"runKeyTemplate": "{{ parameters.nope }}", "sampleEvent": {"payload": {"k": "v"}}},
    )
    assert bad.status_code == 400, bad.text
    assert bad.json()["detail"]["errors"][0]["field"] == "runKeyTemplate"
    unchanged = (await api.get(path)).json()["data"]
    assert unchanged["version"] == 1
    assert unchanged["runKeyTemplate"] == "{{ parameters.k }}"


async def test_guards_and_unknown_workflows(api: httpx.AsyncClient) -> None:
    await workflow(api)
    body = {"eventType": "metastore.record.updated"}
    refused = await api.post(f"/workflows/{SLUG}/triggers", json=body, headers=bearer(READER_TOKEN))
    assert refused.status_code == 403
    assert (await api.post("/workflows/nope/triggers", json=body)).status_code == 404
    created = (await api.post(f"/workflows/{SLUG}/triggers", json=body)).json()["data"]
    assert created["name"] == "metastore.record.updated"
    assert (
        await api.get(f"/workflows/{SLUG}/triggers/{created['id']}/deliveries?limit=0")
    ).status_code == 400


async def test_operators_force_and_cancel_throttled_deliveries(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    await gated_workflow(api, tmp_path / "gate")  # the first run stays in flight
    created = await trigger(api, maxConcurrency=1)
    first = await delivery_of(api, created["id"], await publish(api, n=1))
    assert first["status"] == "launched"
    forced = await delivery_of(api, created["id"], await publish(api, n=2))
    canceled = await delivery_of(api, created["id"], await publish(api, n=3))
    assert forced["status"] == canceled["status"] == "throttled"
    response = await api.post(f"/admin/retries/deliveries/{forced['id']}/force")
    assert response.status_code == 202, response.text
    assert response.json()["data"]["status"] == "launched"
    response = await api.post(f"/admin/retries/deliveries/{canceled['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["record"]["status"] == "skipped"
    again = await api.post(f"/admin/retries/deliveries/{canceled['id']}/cancel")
    assert again.status_code == 409
    assert (await api.post("/admin/retries/deliveries/nope/force")).status_code == 404
    no_scope = await api.post(
        f"/admin/retries/deliveries/{forced['id']}/force", headers=bearer(READER_TOKEN)
    )
    assert no_scope.status_code == 403
    active = [r for r in await runs(api) if r["status"] in ("pending", "running")]
    assert len(active) == 2  # the forced run went past maxConcurrency
    (tmp_path / "gate").touch()  # let both runs end


def _ms(moment: str) -> float:
    from apphub.domain.base import parse_iso

    return parse_iso(moment).timestamp() * 1000


async def test_a_run_key_that_renders_out_of_shape_fails_the_delivery(
    api: httpx.AsyncClient,
) -> None:
    await workflow(api)
    created = await trigger(api, runKeyTemplate="{{ event.payload.k }}")
    failed = await delivery_of(api, created["id"], await publish(api, k="has spaces"))
    assert failed["status"] == "failed", failed
    assert "runKey" in failed["lastError"]
    launched = await delivery_of(api, created["id"], await publish(api, k="fine-key"))
    assert launched["status"] == "launched", launched
    assert [run["runKey"] for run in await runs(api)] == ["fine-key"]


async def test_the_repair_pass_decides_an_event_whose_hand_off_was_lost(
    database: Database, tmp_path: Path
) -> None:
    """Stored and processed by the ingress, never given to the trigger queue (a lost
    message): the repair pass finds it and decides it once; again, it finds nothing."""
    quiet = {"reconcile_interval_ms": 3_600_000}  # only the test calls the repair pass
    async with open_hub(database, tmp_path, **quiet) as hub:
        api = hub.client
        await register_job(api, "emit", "emit")
        await workflow(api)
        created = await trigger(api, eventSource="metastore.api")
        now = datetime.now(UTC)
        async with database.write() as connection:  # the trigger was there before the events
            await connection.execute(
                update(workflow_event_triggers)
                .where(workflow_event_triggers.c.id == created["id"])
                .values(created_at=now - timedelta(hours=3))
            )

        def lost(event_type: str, ago: timedelta) -> tuple[EventEnvelope, datetime]:
            envelope = EventEnvelope(type=event_type, source="metastore.api", payload={"k": 1})
            return envelope, now - ago

        missed = lost("metastore.record.updated", timedelta(seconds=30))
        unlistened = lost("metastore.record.deleted", timedelta(seconds=30))
        too_old = lost("metastore.record.updated", timedelta(hours=2))  # past the repair window
        async with database.write() as connection:
            for envelope, received in (missed, unlistened, too_old):
                [row] = await event_store.insert_events(connection, [event_row(envelope, received)])
                await event_store.mark(connection, [row.seq], event_store.PROCESSED, None)
        assert await deliveries(api, created["id"]) == []

        worker = hub.services.trigger_worker()
        assert await worker.repair_once() == 1
        event_id = missed[0].id
        delivery = await delivery_of(api, created["id"], event_id)
        assert delivery["status"] == "launched", delivery
        run = await wait_for_run(api, delivery["workflowRunId"])
        assert run["status"] == "succeeded", run
        assert run["trigger"]["event"]["id"] == event_id

        assert await worker.repair_once() == 0  # decided: nothing left to repair
        await worker.handle_now([event_id])  # a late redelivery changes nothing either
        assert [d["id"] for d in await deliveries(api, created["id"])] == [delivery["id"]]
        assert [r["id"] for r in await runs(api)] == [run["id"]]


async def stored_events(database: Database, *payloads: dict[str, Any]) -> list[str]:
    """Events stored and processed as the ingress leaves them, not yet handed to a trigger."""
    ids = []
    async with database.write() as connection:
        for payload in payloads:
            envelope = EventEnvelope(
                type="metastore.record.updated", source="metastore.api", payload=payload
            )
            [row] = await event_store.insert_events(
                connection, [event_row(envelope, datetime.now(UTC))]
            )
            await event_store.mark(connection, [row.seq], event_store.PROCESSED, None)
            ids.append(row.id)
    return ids


async def test_one_undecidable_pair_fails_alone_and_the_rest_of_its_batch_is_delivered(
    database: Database, tmp_path: Path
) -> None:
    """A payload number no float holds is "not a number" (its gt does not hold); a stored
    predicate that can no longer be evaluated fails that one delivery, saying why. Neither
    aborts the transaction that decides the other events batched with them."""
    async with open_hub(database, tmp_path, reconcile_interval_ms=3_600_000) as hub:
        api = hub.client
        await register_job(api, "emit", "emit")
        await workflow(api)
        numeric = await trigger(
            api, predicates=[{"path": "$.payload.n", "operator": "gt", "value": 1}]
        )
        legacy = await trigger(api, name="legacy", eventSource="metastore.api")
        async with database.write() as connection:  # stored before a rule refused it
            broken = [{"path": "$.payload.n", "operator": "regex", "value": "(a+)+"}]
            await connection.execute(
                update(workflow_event_triggers)
                .where(workflow_event_triggers.c.id == legacy["id"])
                .values(predicates=broken)
            )
        huge, good = await stored_events(database, {"n": 10**400}, {"n": 5})

        await hub.services.trigger_worker().handle_now([huge, good])  # one batch

        launched = await delivery_of(api, numeric["id"], good)
        assert launched["status"] == "launched", launched
        assert await deliveries(api, numeric["id"], eventId=huge) == []
        for event_id in (huge, good):
            failed = await delivery_of(api, legacy["id"], event_id)
            assert failed["status"] == "failed", failed
            assert failed["lastError"].startswith("predicates could not be evaluated"), failed
        assert [run["id"] for run in await runs(api)] == [launched["workflowRunId"]]


async def throttled_deliveries(
    database: Database, trigger_id: str, count: int, *, due_last: bool = False
) -> list[str]:
    """`count` throttled deliveries of stored events, oldest first; their retries are not due
    for ten minutes (the newest one's is overdue when `due_last`)."""
    event_ids = await stored_events(database, *({"i": i} for i in range(count)))
    now = datetime.now(UTC)
    rows = [
        {
            "id": f"delivery-{i:04d}",
            "trigger_id": trigger_id,
            "event_id": event_id,
            "status": "throttled",
            "attempts": 1,
            "last_error": "maxConcurrency runs of this trigger are pending or running",
            "workflow_run_id": None,
            "dedupe_key": None,
            "next_attempt_at": now + timedelta(minutes=-1 if due_last and i == count - 1 else 10),
            "launched_at": None,
            "created_at": now - timedelta(seconds=count - i),
            "updated_at": now,
        }
        for i, event_id in enumerate(event_ids)
    ]
    async with database.write() as connection:
        await trigger_store.insert_deliveries(connection, rows)
    return [row["id"] for row in rows]


@asynccontextmanager
async def concurrency_one_hub(
    database: Database, tmp_path: Path
) -> AsyncIterator[tuple[Hub, dict[str, Any]]]:
    """A hub without workers (deliveries stay where the test puts them) and a trigger with
    `maxConcurrency: 1` on the `emit` workflow."""
    async with open_hub(database, tmp_path, workers=False) as hub:
        await register_job(hub.client, "emit", "emit")
        await workflow(hub.client)
        yield hub, await trigger(hub.client, maxConcurrency=1)


async def test_force_reaches_a_delivery_behind_a_full_page_and_only_once(
    database: Database, tmp_path: Path
) -> None:
    async with concurrency_one_hub(database, tmp_path) as (hub, created):
        api = hub.client
        newest = (await throttled_deliveries(database, created["id"], 201))[-1]

        forced = await api.post(f"/admin/retries/deliveries/{newest}/force")
        assert forced.status_code == 202, forced.text
        assert forced.json()["data"]["status"] == "launched"
        [run] = await runs(api)
        assert forced.json()["data"]["record"]["workflowRunId"] == run["id"]
        for action in ("force", "cancel"):
            again = await api.post(f"/admin/retries/deliveries/{newest}/{action}")
            assert again.status_code == 409, again.text
            assert again.json()["reason"] == "not_waiting"
        assert len(await runs(api)) == 1
        waiting = await deliveries(api, created["id"], status="throttled", limit=200)
        assert len(waiting) == 200


async def test_a_due_delivery_behind_a_full_page_of_waiting_ones_gets_its_turn(
    database: Database, tmp_path: Path
) -> None:
    async with concurrency_one_hub(database, tmp_path) as (hub, created):
        api = hub.client
        ids = await throttled_deliveries(database, created["id"], 201, due_last=True)

        await hub.services.trigger_worker().retry_trigger(created["id"], due_only=True)

        [launched] = await deliveries(api, created["id"], status="launched")
        assert launched["id"] == ids[-1]
        assert len(await deliveries(api, created["id"], status="throttled", limit=200)) == 200


async def lock_waiters(database: Database) -> int:
    """PostgreSQL sessions of this database waiting on a lock."""
    query = (
        select(func.count())
        .where(text("wait_event_type = 'Lock' AND datname = current_database()"))
        .select_from(text("pg_stat_activity"))
    )
    async with database.read() as connection:
        return int((await connection.execute(query)).scalar_one())


@pytest.mark.parametrize("action", ["cancel", "force"])
async def test_an_operator_racing_a_retry_that_launches_gets_409_and_the_launch_stands(
    database: Database, tmp_path: Path, action: str
) -> None:
    """The operator's request reads the delivery while a retry's transaction, launching it,
    is still open; it must not overwrite that launch (nor launch it twice)."""
    async with concurrency_one_hub(database, tmp_path) as (hub, created):
        api = hub.client
        [delivery_id] = await throttled_deliveries(database, created["id"], 1)
        async with database.write() as connection:
            done = await retry(
                connection,
                created["id"],
                hub.services.pause_rule(),
                datetime.now(UTC),
                due_only=False,
            )
            assert len(done.runs) == 1
            request = asyncio.create_task(
                api.post(f"/admin/retries/deliveries/{delivery_id}/{action}")
            )
            await _until_blocked(database)
        response = await request
        assert response.status_code == 409, response.text
        assert response.json() == {
            "error": "delivery is launched, not throttled",
            "reason": "not_waiting",
        }
        [delivery] = await deliveries(api, created["id"])
        assert delivery["status"] == "launched", delivery
        assert [run["id"] for run in await runs(api)] == [delivery["workflowRunId"]]


async def _until_blocked(database: Database) -> None:
    """PostgreSQL: until the request waits on a lock the open transaction holds. SQLite has
    one connection, held by that transaction: the request cannot even read before it ends."""
    if not database.is_postgres:
        return
    deadline = time.monotonic() + 20
    while await lock_waiters(database) == 0:
        assert time.monotonic() < deadline, "the request never waited on the retry's locks"
        await asyncio.sleep(0.02)
