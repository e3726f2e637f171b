"""The service registry and service steps on every backend, against a real HTTP server on
127.0.0.1 that the tests script (`tests.http_peer`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import structlog
from sqlalchemy import text, update

from apphub.bus import create_broadcaster
from apphub.domain.base import utc_now
from apphub.domain.services import ServiceSpec
from apphub.engine.service_health import HealthPoller
from apphub.store import services as service_store
from apphub.store.database import Database, open_database
from apphub.store.tables import services as services_table
from tests.conftest import READER_TOKEN, Hub, bearer, open_hub
from tests.http_peer import HttpPeer, Reply, http_peer
from tests.runs import register_job, register_workflow, start_run, steps_of, wait_for, wait_for_run

POLL_MS = 300


@pytest.fixture
def peer() -> Iterator[HttpPeer]:
    with http_peer() as running:
        running.reply("/health", Reply(200, {"status": "ok"}))
        yield running


@pytest.fixture
async def hub(database: Database, tmp_path: Path) -> AsyncIterator[Hub]:
    async with open_hub(database, tmp_path, service_health_interval_ms=POLL_MS) as opened:
        await register_job(opened.client, "emit", "emit")
        yield opened


async def register_service(
    api: httpx.AsyncClient, peer: HttpPeer, slug: str = "billing", **fields: Any
) -> dict[str, Any]:
    response = await api.post("/services", json={"slug": slug, "baseUrl": peer.url, **fields})
    assert response.status_code == 201, response.text
    service: dict[str, Any] = response.json()["data"]
    return service


async def status_becomes(api: httpx.AsyncClient, status: str, slug: str = "billing") -> Any:
    return await wait_for(api, f"/services/{slug}", lambda service: service["status"] == status)


def call(request: dict[str, Any], step_id: str = "call", **fields: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "service",
        "serviceSlug": "billing",
        "request": request,
        **fields,
    }


async def wait_until(done: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.02)


async def health_events(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    """`service.health.changed` events, newest first."""
    response = await api.get("/admin/events?type=service.health.changed")
    events: list[dict[str, Any]] = response.json()["data"]["events"]
    return events


async def run_to_end(api: httpx.AsyncClient, slug: str, **body: Any) -> dict[str, Any]:
    return await wait_for_run(api, (await start_run(api, slug, **body))["id"])


# --- the registry ----------------------------------------------------------------------------


async def test_register_read_change_and_delete(hub: Hub, peer: HttpPeer) -> None:
    api = hub.client
    created = await register_service(
        api, peer, displayName="Billing", healthPath="/health", metadata={"team": "fin"}
    )
    assert created["slug"] == "billing"
    assert created["baseUrl"] == peer.url
    assert created["status"] == "unknown"
    assert (
        await api.post("/services", json={"slug": "billing", "baseUrl": peer.url})
    ).status_code == 409
    healthy = await status_becomes(api, "healthy")  # checked at once, not after 30 s
    assert healthy["latencyMs"] is not None
    assert healthy["lastCheckedAt"] is not None
    assert [s["slug"] for s in (await api.get("/services")).json()["data"]] == ["billing"]

    patched = await api.patch("/services/billing", json={"displayName": "Billing API"})
    assert patched.status_code == 200
    assert patched.json()["data"]["displayName"] == "Billing API"
    assert patched.json()["data"]["status"] == "healthy"  # same address: health kept
    moved = await api.patch("/services/billing", json={"healthPath": "/ready"})
    assert moved.json()["data"]["status"] == "unknown"  # a new address is checked again
    await status_becomes(api, "unhealthy")  # /ready is not scripted: 404

    assert (await api.delete("/services/billing")).status_code == 204
    assert (await api.get("/services/billing")).status_code == 404
    assert (await api.delete("/services/billing")).status_code == 404
    assert (await api.patch("/services/billing", json={"displayName": "x"})).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "ftp", "baseUrl": "ftp://files.example"}, "baseUrl"),
        ({"slug": "nohost", "baseUrl": "http://"}, "baseUrl"),
        ({"slug": "creds", "baseUrl": "https://user:pw@api.example"}, "baseUrl"),
        ({"slug": "query", "baseUrl": "https://api.example/?a=1"}, "baseUrl"),
        ({"slug": "emptyquery", "baseUrl": "https://api.example?"}, "baseUrl"),
        ({"slug": "emptyhash", "baseUrl": "https://api.example#"}, "baseUrl"),
        ({"slug": "Upper", "baseUrl": "https://api.example"}, "slug"),
        ({"slug": "path", "baseUrl": "https://api.example", "healthPath": "health"}, "healthPath"),
        (
            {"slug": "away", "baseUrl": "https://api.example", "healthPath": "//x.example/h"},
            "healthPath",
        ),
        (
            {"slug": "ctl", "baseUrl": "https://api.example", "healthPath": "/a\u0001b"},
            "healthPath",
        ),
        ({"slug": "extra", "baseUrl": "https://api.example", "colour": "red"}, "colour"),
    ],
)
async def test_bad_registrations_are_400_and_store_nothing(
    hub: Hub, body: dict[str, Any], field: str
) -> None:
    response = await hub.client.post("/services", json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]
    assert (await hub.client.get("/services")).json()["data"] == []


async def test_bad_changes_are_400_and_change_nothing(hub: Hub, peer: HttpPeer) -> None:
    api = hub.client
    await register_service(api, peer)
    for patch in ({"baseUrl": "file:///etc/passwd"}, {"baseUrl": None}, {"slug": "other"}):
        response = await api.patch("/services/billing", json=patch)
        assert response.status_code == 400, (patch, response.text)
    assert (await api.get("/services/billing")).json()["data"]["baseUrl"] == peer.url


async def test_writes_need_the_services_scope(hub: Hub, peer: HttpPeer) -> None:
    body = {"slug": "billing", "baseUrl": peer.url}
    refused = await hub.client.post("/services", json=body, headers=bearer(READER_TOKEN))
    assert refused.status_code == 403
    anonymous = await hub.client.post("/services", json=body, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert (await hub.client.get("/services")).json()["data"] == []


# --- health ----------------------------------------------------------------------------------


async def test_a_health_change_publishes_exactly_one_event(hub: Hub, peer: HttpPeer) -> None:
    api = hub.client
    await register_service(api, peer)
    await status_becomes(api, "healthy")
    peer.reply("/health", Reply(503, {"status": "down"}))
    down = await status_becomes(api, "unhealthy")
    assert "503" in down["statusMessage"]
    await asyncio.sleep(POLL_MS * 4 / 1000)  # several more polls, same status
    assert len(peer.received("/health")) >= 4
    events = await health_events(api)
    changes = [(e["payload"]["previousStatus"], e["payload"]["status"]) for e in events]
    assert changes == [("healthy", "unhealthy"), ("unknown", "healthy")]
    assert {e["source"] for e in events} == {"apphub.services"}
    assert events[0]["payload"]["slug"] == "billing"


async def test_degraded_and_timeouts_are_read_from_the_health_answer(
    hub: Hub, peer: HttpPeer
) -> None:
    api = hub.client
    peer.reply("/health", Reply(200, {"status": "degraded"}))
    await register_service(api, peer)
    degraded = await status_becomes(api, "degraded")
    assert "degraded" in degraded["statusMessage"]
    peer.reply("/health", Reply(200, {"status": "ok"}, delay_s=1.5))
    checked = await api.post("/services/billing/health-check")
    assert checked.status_code == 200
    assert checked.json()["data"]["status"] == "healthy"
    assert (await api.post("/services/ghost/health-check")).status_code == 404


# --- service steps ---------------------------------------------------------------------------


async def test_job_then_service_then_job(hub: Hub, peer: HttpPeer) -> None:
    api = hub.client
    peer.reply("/orders/42", Reply(201, {"ok": True, "id": 42}))
    await register_service(api, peer)
    await status_becomes(api, "healthy")
    steps = [
        {"id": "seed", "jobSlug": "emit", "parameters": {"order": 42}},
        call(
            {
                "path": "/orders/{{ steps.seed.result.parameters.order }}",
                "method": "POST",
                "query": {
                    "dryRun": False,
                    "tags": ["a", None, "b"],
                    "filter": {"min": 1.5},
                    "skip": None,
                },
                "headers": {"X-Run": "run {{ run.id }}"},
                "body": {"order": "{{ steps.seed.result.parameters.order }}", "note": "hi"},
            },
            dependsOn=["seed"],
            storeResponseAs="reply",
        ),
        {
            "id": "use",
            "jobSlug": "emit",
            "dependsOn": ["call"],
            "parameters": {"ok": "{{ steps.call.result.body.ok }}"},
        },
    ]
    await register_workflow(api, "order", steps)
    run = await run_to_end(api, "order")
    assert run["status"] == "succeeded", run
    [request] = peer.received("/orders/42")
    assert request.method == "POST"
    assert request.json() == {"order": 42, "note": "hi"}
    assert parse_qs(request.query) == {
        "dryRun": ["false"],
        "tags": ["a", "b"],
        "filter": ['{"min":1.5}'],
    }
    assert request.headers["x-run"] == f"run {run['id']}"
    steps_by_id = await steps_of(api, run["id"])
    assert steps_by_id["use"]["input"]["ok"] is True
    response = steps_by_id["call"]["output"]
    assert response["statusCode"] == 201
    assert response["body"] == {"ok": True, "id": 42}
    assert response["headers"]["x-peer"] == "test"
    assert steps_by_id["call"]["jobRunId"] is None
    assert steps_by_id["call"]["input"]["request"]["path"] == "/orders/42"
    assert run["context"]["shared"]["reply"]["body"]["ok"] is True


async def test_a_500_then_200_succeeds_on_the_second_attempt(hub: Hub, peer: HttpPeer) -> None:
    api = hub.client
    peer.reply("/flaky", Reply(500, "overloaded"), Reply(200, {"ok": True}))
    await register_service(api, peer)
    await status_becomes(api, "healthy")
    retry = {"maxAttempts": 2, "strategy": "none"}
    await register_workflow(api, "retrying", [call({"path": "/flaky"}, retryPolicy=retry)])
    run = await run_to_end(api, "retrying")
    assert run["status"] == "succeeded", run
    step = (await steps_of(api, run["id"]))["call"]
    assert step["attempt"] == 2
    assert len(peer.received("/flaky")) == 2

    peer.reply("/broken", Reply(500, "still overloaded"))
    await register_workflow(api, "failing", [call({"path": "/broken"}, retryPolicy=retry)])
    failed = await run_to_end(api, "failing")
    step = (await steps_of(api, failed["id"]))["call"]
    assert (failed["status"], step["failureReason"], step["attempt"]) == (
        "failed",
        "http-status",
        2,
    )
    assert "answered 500" in step["errorMessage"]
    assert "still overloaded" in step["errorMessage"]


async def test_a_degraded_service_is_not_called_unless_allowed(hub: Hub, peer: HttpPeer) -> None:
    api = hub.client
    peer.reply("/health", Reply(200, {"status": "degraded"}))
    peer.reply("/work", Reply(200, {"done": True}))
    await register_service(api, peer)
    await status_becomes(api, "degraded")
    await register_workflow(api, "strict", [call({"path": "/work"})])
    run = await run_to_end(api, "strict")
    step = (await steps_of(api, run["id"]))["call"]
    assert run["status"] == "failed"
    assert step["failureReason"] == "service-unavailable"
    assert "degraded" in step["errorMessage"]
    assert peer.received("/work") == []  # refused without a request

    await register_workflow(api, "lenient", [call({"path": "/work"}, allowDegraded=True)])
    assert (await run_to_end(api, "lenient"))["status"] == "succeeded"
    await register_workflow(api, "careless", [call({"path": "/work"}, requireHealthy=False)])
    assert (await run_to_end(api, "careless"))["status"] == "succeeded"
    assert len(peer.received("/work")) == 2


async def test_secret_headers_reach_the_service_and_are_stored_masked(
    hub: Hub, peer: HttpPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = hub.client
    monkeypatch.setenv("BILLING_TOKEN", "s3cret-value")
    peer.reply("/secure", Reply(200, {"ok": True}))
    await register_service(api, peer)
    await status_becomes(api, "healthy")
    secret = {"secret": {"source": "env", "key": "BILLING_TOKEN"}, "prefix": "Bearer "}
    headers = {"Authorization": secret, "X-Plain": "visible"}
    await register_workflow(api, "secure", [call({"path": "/secure", "headers": headers})])
    run = await run_to_end(api, "secure")
    assert run["status"] == "succeeded", run
    [request] = peer.received("/secure")
    assert request.headers["authorization"] == "Bearer s3cret-value"
    step = (await steps_of(api, run["id"]))["call"]
    assert step["input"]["request"]["headers"] == {"Authorization": "***", "X-Plain": "visible"}
    stored = json.dumps(
        [
            (await api.get(f"/workflow-runs/{run['id']}/steps")).json(),
            (await api.get(f"/workflow-runs/{run['id']}")).json(),
            (await api.get("/admin/events?limit=200")).json(),
        ]
    )
    assert "s3cret-value" not in stored

    missing = {"Authorization": {"secret": {"source": "env", "key": "NOT_SET_ANYWHERE"}}}
    await register_workflow(api, "unset", [call({"path": "/secure", "headers": missing})])
    failed = await run_to_end(api, "unset")
    step = (await steps_of(api, failed["id"]))["call"]
    assert (failed["status"], step["failureReason"]) == ("failed", "missing-secret")
    assert "NOT_SET_ANYWHERE" in step["errorMessage"]
    assert len(peer.received("/secure")) == 1


@pytest.mark.parametrize("value", ["TOPSECRET-abc\n", "TOPSECRET-\u00e9abc"])
async def test_a_secret_no_header_can_carry_fails_the_step_naming_only_its_key(
    hub: Hub, peer: HttpPeer, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """An HTTP library's refusal would quote the value: the step names the key, is not
    retried, and no stored row, event or log line holds the secret."""
    api = hub.client
    monkeypatch.setenv("BILLING_TOKEN", value)
    peer.reply("/secure", Reply(200, {"ok": True}))
    await register_service(api, peer)
    await status_becomes(api, "healthy")
    secret = {"Authorization": {"secret": {"source": "env", "key": "BILLING_TOKEN"}}}
    retry = {"maxAttempts": 3, "strategy": "none"}
    steps = [call({"path": "/secure", "headers": secret}, retryPolicy=retry)]
    await register_workflow(api, "secure", steps)
    with structlog.testing.capture_logs() as logs:
        run = await run_to_end(api, "secure")
    step = (await steps_of(api, run["id"]))["call"]
    assert (step["failureReason"], step["attempt"]) == ("invalid-request", 1)
    assert "BILLING_TOKEN" in step["errorMessage"]
    stored = json.dumps([step, run, (await api.get("/admin/events?limit=200")).json()])
    assert "TOPSECRET" not in stored
    assert "TOPSECRET" not in repr(logs)
    assert peer.received("/secure") == []


async def test_a_path_no_url_can_carry_is_an_invalid_request_not_retried(
    hub: Hub, peer: HttpPeer
) -> None:
    api = hub.client
    await register_service(api, peer)
    await status_becomes(api, "healthy")
    retry = {"maxAttempts": 3, "strategy": "none"}
    await register_workflow(
        api, "ctl", [call({"path": "/x/{{ parameters.id }}"}, retryPolicy=retry)]
    )
    run = await run_to_end(api, "ctl", parameters={"id": "a\u0001b"})
    step = (await steps_of(api, run["id"]))["call"]
    assert (run["status"], step["failureReason"], step["attempt"]) == (
        "failed",
        "invalid-request",
        1,
    )


async def test_a_service_whose_address_cannot_be_requested_fails_only_its_own_check(
    hub: Hub, peer: HttpPeer
) -> None:
    """A row the API would refuse today (an older release, a hand edit): the poll goes on."""
    api = hub.client
    await register_service(api, peer, slug="odd")
    async with hub.services.database.write() as connection:
        await connection.execute(
            update(services_table)
            .where(services_table.c.slug == "odd")
            .values(health_path="//elsewhere.example/h")
        )
    await register_service(api, peer)
    await status_becomes(api, "healthy")
    odd = await status_becomes(api, "unhealthy", slug="odd")
    assert "not a URL" in odd["statusMessage"]
    checked = await api.post("/services/odd/health-check")
    assert checked.status_code == 200, checked.text


async def test_a_check_of_an_address_the_service_left_is_not_recorded(
    database: Database, tmp_path: Path
) -> None:
    """A check still in flight when PATCH moves the service says nothing about the new
    address: the new one is checked (nothing listens on port 9: unhealthy), never `healthy`."""
    with http_peer() as old:
        old.reply("/health", Reply(200, {"status": "ok"}, delay_s=1.5))
        async with open_hub(database, tmp_path, service_health_interval_ms=60_000) as hub:
            api = hub.client
            await register_service(api, old)
            await wait_until(lambda: bool(old.received("/health")))
            moved = await api.patch("/services/billing", json={"baseUrl": "http://127.0.0.1:9"})
            assert moved.json()["data"]["status"] == "unknown"
            await status_becomes(api, "unhealthy")
            await asyncio.sleep(2.0)  # the old check has answered by now, and was dropped
            service = (await api.get("/services/billing")).json()["data"]
            assert service["status"] == "unhealthy", service
            changes = await health_events(api)
            assert [e["payload"]["status"] for e in changes] == ["unhealthy"]


async def test_a_slow_service_times_the_step_out(hub: Hub, peer: HttpPeer) -> None:
    api = hub.client
    peer.reply("/slow", Reply(200, {"ok": True}, delay_s=3.0))
    await register_service(api, peer)
    await status_becomes(api, "healthy")
    await register_workflow(api, "slow", [call({"path": "/slow"}, timeoutMs=1000)])
    started = time.monotonic()
    run = await run_to_end(api, "slow")
    step = (await steps_of(api, run["id"]))["call"]
    assert (run["status"], step["failureReason"]) == ("failed", "timeout")
    assert "within 1 s" in step["errorMessage"]
    assert time.monotonic() - started < 2.9  # it did not wait for the answer


async def test_service_steps_fan_out_like_job_steps(hub: Hub, peer: HttpPeer) -> None:
    api = hub.client
    peer.reply("/echo", Reply(200, {"echoed": True}))
    await register_service(api, peer)
    await status_becomes(api, "healthy")
    fanout = {
        "id": "each",
        "type": "fanout",
        "collection": [1, 2, 3],
        "storeResultsAs": "echoes",
        "template": call({"path": "/echo", "query": {"n": "{{ item }}"}}, step_id="ping"),
    }
    await register_workflow(api, "fan", [fanout])
    run = await run_to_end(api, "fan")
    assert run["status"] == "succeeded", run
    assert sorted(request.query for request in peer.received("/echo")) == ["n=1", "n=2", "n=3"]
    results = run["context"]["shared"]["echoes"]
    assert [r["stepId"] for r in results] == ["each:ping:1", "each:ping:2", "each:ping:3"]
    assert all(r["output"]["body"] == {"echoed": True} for r in results)


async def test_an_unregistered_service_fails_the_step_by_name(hub: Hub) -> None:
    api = hub.client
    await register_workflow(api, "ghostly", [call({"path": "/x"}, serviceSlug="ghost")])
    run = await run_to_end(api, "ghostly")
    step = (await steps_of(api, run["id"]))["call"]
    assert (run["status"], step["failureReason"]) == ("failed", "unknown-service")
    assert "'ghost' is not registered" in step["errorMessage"]


async def test_uncaptured_responses_keep_the_status_only(hub: Hub, peer: HttpPeer) -> None:
    api = hub.client
    peer.reply("/big", Reply(200, "x" * 20_000))
    await register_service(api, peer)
    await status_becomes(api, "healthy")
    steps = [
        call({"path": "/big"}, step_id="kept"),
        call({"path": "/big"}, step_id="dropped", captureResponse=False),
    ]
    await register_workflow(api, "sizes", steps)
    run = await run_to_end(api, "sizes")
    by_id = await steps_of(api, run["id"])
    assert len(by_id["kept"]["output"]["body"]) == 8192
    assert by_id["dropped"]["output"] == {"statusCode": 200}


# --- one poller per cluster --------------------------------------------------------------------


async def test_two_pollers_on_postgresql_check_once(postgres_url: str, peer: HttpPeer) -> None:
    """Two poller processes share a PostgreSQL database: only the one holding the role checks;
    when it stops, the other takes over."""
    databases = [open_database(postgres_url) for _ in range(2)]
    async with databases[0].write() as connection:
        await connection.execute(text(f"TRUNCATE {services_table.name}"))
        await service_store.insert_service(
            connection,
            ServiceSpec.model_validate({"slug": "billing", "baseUrl": peer.url}),
            utc_now(),
        )
    pollers = [
        HealthPoller(
            db,
            create_broadcaster("inline"),
            lambda rows: None,
            interval_s=60,
            timeout_s=2,
            standby_check_s=0.2,
        )
        for db in databases
    ]
    tasks = [asyncio.create_task(poller.run()) for poller in pollers]
    try:
        await asyncio.sleep(1.5)
        assert len(peer.received("/health")) == 1  # not one per poller
        acting = next(i for i, p in enumerate(pollers) if p.acting)
        tasks[acting].cancel()
        async with databases[0].write() as connection:  # due again
            await connection.execute(update(services_table).values(last_checked_at=None))
        for _ in range(50):  # the standby asks for the role every 0.2 s
            if len(peer.received("/health")) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(peer.received("/health")) == 2
        assert pollers[1 - acting].acting
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        async with databases[0].write() as connection:
            await connection.execute(text(f"TRUNCATE {services_table.name}"))
        for database in databases:
            await database.dispose()
