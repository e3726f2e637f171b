"""The event log over HTTP on every backend: envelopes, idempotency, paging, filters, limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apphub.api.app import create_app
from apphub.domain.ratelimits import RateLimit
from apphub.settings import Settings
from apphub.store import events as event_store
from apphub.store.database import Database
from tests.conftest import ADMIN_TOKEN, TEST_TOKENS, bearer
from tests.runs import register_job, register_workflow, start_run, steps_of, wait_for_run


def event(**fields: Any) -> dict[str, Any]:
    return {
        "type": "metastore.record.updated",
        "source": "metastore.api",
        "payload": {"namespace": "flags"},
    } | fields


async def stored(api: httpx.AsyncClient, **query: Any) -> list[dict[str, Any]]:
    response = await api.get("/admin/events", params={"limit": 200} | query)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]["events"]
    return events


async def test_publish_stores_the_event_with_its_view(api: httpx.AsyncClient) -> None:
    body = event(
        id="evt-1",
        correlationId="req-41",
        ttl=60000,
        payload={"namespace": "flags", "workflowRunId": "run-9"},
        metadata={"team": "data"},
    )
    response = await api.post("/events", json=body)
    assert response.status_code == 202
    accepted = response.json()["data"]
    assert accepted["event"]["id"] == "evt-1"
    assert accepted["acceptedAt"].endswith("Z")
    [view] = await stored(api)
    assert (view["id"], view["type"], view["source"]) == (
        "evt-1",
        "metastore.record.updated",
        "metastore.api",
    )
    assert (view["correlationId"], view["ttl"], view["metadata"]) == (
        "req-41",
        60000,
        {"team": "data"},
    )
    assert view["severity"] == "info"
    assert view["links"] == {"workflowRunIds": ["run-9"]}
    alias = await api.post("/internal/events/publish", json=event(id="evt-2"))
    assert alias.status_code == 202
    assert len(await stored(api)) == 2


async def test_defaults_fill_id_time_and_payload(api: httpx.AsyncClient) -> None:
    response = await api.post("/events", json={"type": "ping", "source": "svc"})
    envelope = response.json()["data"]["event"]
    assert len(envelope["id"]) == 36
    assert envelope["payload"] == {}
    assert envelope["occurredAt"].endswith("Z")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "s"}, "type"),
        ({"type": "", "source": "s"}, "type"),
        ({"type": "t" * 257, "source": "s"}, "type"),
        ({"type": "t"}, "source"),
        ({"type": "t", "source": "s", "occurredAt": "yesterday"}, "occurredAt"),
        ({"type": "t", "source": "s", "ttl": -1}, "ttl"),
        ({"type": "t", "source": "s", "metadata": [1]}, "metadata"),
        ({"type": "t", "source": "s", "payload": {"x": "y" * 300_000}}, "payload"),
        ({"type": "t", "source": "s", "colour": "red"}, "colour"),
    ],
)
async def test_invalid_envelopes_are_400_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await api.post("/events", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]["errors"][0]["field"] == field
    assert await stored(api) == []


async def test_a_replayed_id_is_stored_once(api: httpx.AsyncClient) -> None:
    for _ in range(3):
        assert (await api.post("/events", json=event(id="same"))).status_code == 202
    assert [view["id"] for view in await stored(api)] == ["same"]


async def test_publishing_needs_the_scope(api: httpx.AsyncClient) -> None:
    from tests.conftest import READER_TOKEN

    refused = await api.post("/events", json=event(), headers=bearer(READER_TOKEN))
    assert refused.status_code == 403
    assert (await api.get("/admin/events", headers={"Authorization": ""})).status_code == 401
    assert await stored(api) == []


async def test_cursor_pages_through_ties_in_occurred_at(api: httpx.AsyncClient) -> None:
    moment = "2026-11-23T10:00:00.000Z"
    ids = [f"tie-{n}" for n in range(7)]
    for event_id in ids:
        await api.post("/events", json=event(id=event_id, occurredAt=moment))
    await api.post("/events", json=event(id="older", occurredAt="2026-11-23T09:00:00Z"))
    await api.post("/events", json=event(id="newer", occurredAt="2026-11-23T11:00:00Z"))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/admin/events", params=params)).json()["data"]
        seen += [view["id"] for view in page["events"]]
        assert page["page"]["limit"] == 3
        cursor = page["page"]["nextCursor"]
        assert page["page"]["hasMore"] == (cursor is not None)
        if cursor is None:
            break
    assert seen == ["newer", *sorted(ids, reverse=True), "older"]


async def test_filters(api: httpx.AsyncClient) -> None:
    await api.post(
        "/events", json=event(id="a", correlationId="c1", occurredAt="2026-11-01T00:00:00Z")
    )
    await api.post(
        "/events", json=event(id="b", source="filestore.api", occurredAt="2026-11-10T00:00:00Z")
    )
    await api.post(
        "/events", json=event(id="c", type="job.run.failed", occurredAt="2026-11-20T00:00:00Z")
    )

    async def ids(**query: Any) -> list[str]:
        return [view["id"] for view in await stored(api, **query)]

    assert await ids(type="job.run.failed") == ["c"]
    assert await ids(source="filestore.api") == ["b"]
    assert await ids(correlationId="c1") == ["a"]
    assert await ids(severity="error") == ["c"]
    assert await ids(**{"from": "2026-11-05T00:00:00Z"}) == ["c", "b"]
    assert await ids(to="2026-11-10T00:00:00Z") == ["b", "a"]
    assert await ids(**{"from": "2026-11-05T00:00:00Z", "to": "2026-11-15T00:00:00Z"}) == ["b"]


@pytest.mark.parametrize(
    "query",
    [
        {"cursor": "not-a-cursor"},
        {"cursor": "eyJ2IjoxfQ"},
        {"from": "soon"},
        {"to": "2026-13-40"},
        {"severity": "loud"},
        {"limit": 0},
        {"limit": 201},
    ],
)
async def test_bad_queries_are_400(api: httpx.AsyncClient, query: dict[str, Any]) -> None:
    response = await api.get("/admin/events", params=query)
    assert response.status_code == 400, response.text


@pytest.fixture
async def limited_api(database: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose `svc` source may send 2 events a minute, then pauses for 0.5 s."""
    settings = Settings(
        database_url=str(database.engine.url),
        data_dir=tmp_path,
        operator_tokens=TEST_TOKENS,
        event_rate_limits=(RateLimit("svc", 2, 60_000, 500),),
    )
    app = create_app(settings, database=database, workers=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=bearer(ADMIN_TOKEN)
        ) as client:
            yield client


async def test_a_paused_source_is_delayed_never_dropped(
    limited_api: httpx.AsyncClient, database: Database
) -> None:
    for n in range(5):
        assert (
            await limited_api.post("/events", json=event(id=f"r{n}", source="svc"))
        ).status_code == 202
    assert (await limited_api.post("/events", json=event(id="other"))).status_code == 202
    async with database.read() as connection:
        now = await event_store.counts_by_status(connection)
    assert now == {"processed": 3, "deferred": 3}
    assert len(await stored(limited_api)) == 6

    deadline = time.monotonic() + 10
    while True:
        async with database.read() as connection:
            counts = await event_store.counts_by_status(connection)
        if counts == {"processed": 6}:
            break
        assert time.monotonic() < deadline, f"deferred events never processed: {counts}"
        await asyncio.sleep(0.05)


async def test_an_event_published_by_a_python_job_carries_its_workflow_context(
    api: httpx.AsyncClient,
) -> None:
    await register_job(api, "announce", "publish_from_job")
    workflow = await register_workflow(api, "announcer", [{"id": "say", "jobSlug": "announce"}])
    run = await wait_for_run(api, (await start_run(api, "announcer", runKey="k-1"))["id"])
    assert run["status"] == "succeeded", run
    step = (await steps_of(api, run["id"]))["say"]
    [published] = await stored(api, type="job.note")
    assert published["id"] == step["output"]["eventId"]
    assert published["metadata"]["__apphubWorkflow"] == {
        "workflowDefinitionId": workflow["id"],
        "workflowRunId": run["id"],
        "workflowRunStepId": step["id"],
        "jobRunId": step["jobRunId"],
        "jobSlug": "announce",
        "workflowRunKey": "k-1",
    }
    assert published["links"]["workflowRunIds"] == [run["id"]]


async def test_json_path_paths_and_predicates(api: httpx.AsyncClient) -> None:
    await api.post("/events", json=event(id="few", payload={"count": 1, "items": [{"qty": 1}]}))
    await api.post(
        "/events", json=event(id="many", payload={"count": 5, "items": [{"qty": 1}, {"qty": 9}]})
    )
    await api.post("/events", json=event(id="none", payload={"name": "Flags"}))

    async def ids(path: str) -> list[str]:
        return sorted(view["id"] for view in await stored(api, jsonPath=path))

    assert await ids("$.count") == ["few", "many"]  # a path: selects something
    assert await ids("$.count > 3") == ["many"]  # a predicate: true
    assert await ids("$.count > 30") == []  # a false predicate matches nothing
    assert await ids("$.items[*] ? (@.qty > 5)") == ["many"]
    assert await ids('$.name like_regex "^fl" flag "i"') == ["none"]
    assert await ids("exists($.items) && $.count < 3") == ["few"]


@pytest.mark.parametrize("path", ["$.items[", "count > 3", "$.a ? (@.b ==", "$" + ".a" * 300])
async def test_invalid_json_path_is_400(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get("/admin/events", params={"jsonPath": path})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("jsonPath:")


async def test_retention_prunes_only_old_events(api: httpx.AsyncClient, database: Database) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from apphub.automation.ingress import EventIngress
    from apphub.bus import LocalBroadcaster
    from apphub.bus.frames import FramePublisher
    from apphub.domain.base import utc_now
    from apphub.domain.ratelimits import RateLimiter
    from apphub.store.tables import workflow_events

    for event_id in ("old", "recent"):
        await api.post("/events", json=event(id=event_id))
    async with database.write() as connection:
        await connection.execute(
            update(workflow_events)
            .where(workflow_events.c.id == "old")
            .values(received_at=utc_now() - timedelta(days=31))
        )
    ingress = EventIngress(database, FramePublisher(LocalBroadcaster()), RateLimiter(()))
    assert await ingress.prune(retention_days=30) == 1
    assert [view["id"] for view in await stored(api)] == ["recent"]
    assert await ingress.prune(retention_days=30) == 0
