"""The asset materializer on every backend, driven over HTTP and the event bus as a user would.

`up` produces `raw`; `down` consumes `raw` and produces `clean`. Runs are real runs of the
`produce` fixture job (it reports the assets its parameters list), so every production and
every auto run goes through the orchestrator, the event log and the materializer.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from apphub.automation.ingress import event_row
from apphub.domain.base import iso_ms, parse_iso
from apphub.domain.events import EventEnvelope
from apphub.store import events as event_store
from apphub.store.database import Database
from apphub.store.tables import materializer_decisions, materializer_events
from tests.conftest import Hub, open_hub
from tests.runs import ENDED, register_job, register_workflow, start_run, wait_for, wait_for_run

ON_UPDATE = {"onUpstreamUpdate": True}


@pytest.fixture
async def hub(database: Database, tmp_path: Path) -> Any:
    async with open_hub(database, tmp_path, materializer_base_backoff_ms=400) as opened:
        await register_job(opened.client, "produce", "produce")
        yield opened


def step(
    produces: list[dict[str, Any]], consumes: tuple[str, ...] = (), **fields: Any
) -> dict[str, Any]:
    return {
        "id": "make",
        "jobSlug": "produce",
        "produces": produces,
        "consumes": [{"assetId": asset} for asset in consumes],
        **fields,
    }


def assets(*asset_ids: str, **entry: Any) -> dict[str, Any]:
    return {"assets": [{"assetId": asset_id, "payload": {}, **entry} for asset_id in asset_ids]}


async def upstream(api: httpx.AsyncClient, **declaration: Any) -> None:
    await register_workflow(api, "up", [step([{"assetId": "raw", **declaration}])])


async def downstream(
    api: httpx.AsyncClient,
    block: dict[str, Any] | None = ON_UPDATE,
    *,
    parameters: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    produced: dict[str, Any] = {"assetId": "Clean"}
    if block is not None:
        produced["autoMaterialize"] = block
    return await register_workflow(
        api,
        "down",
        [step([produced], ("raw",))],
        defaultParameters={**assets("clean"), **(parameters or {})},
        **fields,
    )


async def produce_raw(api: httpx.AsyncClient, **entry: Any) -> dict[str, Any]:
    run = await start_run(api, "up", parameters=assets("raw", **entry))
    ended = await wait_for_run(api, run["id"])
    assert ended["status"] == "succeeded", ended
    return ended


async def auto_runs(api: httpx.AsyncClient, slug: str = "down") -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await api.get(f"/workflows/{slug}/runs?limit=50")).json()["data"]
    return [run for run in runs if run["triggeredBy"] == "asset-materializer"]


async def wait_runs(
    api: httpx.AsyncClient, count: int, slug: str = "down", seconds: float = 20.0
) -> list[dict[str, Any]]:
    """Wait until `slug` has `count` auto runs, all ended; newest first."""
    deadline = time.monotonic() + seconds
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = await auto_runs(api, slug)
        if len(runs) >= count and all(run["status"] in ENDED for run in runs):
            return runs
        await asyncio.sleep(0.05)
    raise AssertionError(f"{slug} has not {count} ended auto runs: {runs}")


async def automation(api: httpx.AsyncClient, slug: str = "down") -> dict[str, Any]:
    response = await api.get(f"/workflows/{slug}/auto-materialize")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["data"]
    return body


async def decided(
    api: httpx.AsyncClient, count: int, slug: str = "down", seconds: float = 10.0
) -> list[dict[str, Any]]:
    """The workflow's decisions once there are `count` of them, oldest first."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = (await automation(api, slug))["decisions"]
        if len(found) >= count:
            return list(reversed(found))
        await asyncio.sleep(0.05)
    raise AssertionError(f"{slug} has not {count} decisions: {found}")


async def running_auto_run(api: httpx.AsyncClient) -> dict[str, Any]:
    """`down`'s newest run, once it is running."""
    runs = await wait_for(
        api, "/workflows/down/runs", lambda runs: bool(runs) and runs[0]["status"] == "running"
    )
    run: dict[str, Any] = runs[0]
    return run


async def settled(api: httpx.AsyncClient, slug: str = "down") -> dict[str, Any]:
    """The workflow's automation state once no auto run is in flight: its run's end, claim
    release and cooldown update have all been handled (they are one transaction)."""
    return await wait_for(api, f"/workflows/{slug}/auto-materialize", lambda d: not d["inFlight"])


async def expiries(api: httpx.AsyncClient, slug: str, produced_since: str = "") -> Any:
    """The workflow's pending freshness timers once the materializer has set one for a
    production at or after `produced_since`: timers follow the `asset.produced` event."""
    data = await wait_for(
        api,
        f"/workflows/{slug}/auto-materialize",
        lambda d: any(e["producedAt"] >= produced_since for e in d["nextExpiries"]),
    )
    return data["nextExpiries"]


async def settle(seconds: float = 0.4) -> None:
    """Long enough for anything still on its way to show (a second run would, by now)."""
    await asyncio.sleep(seconds)


# --- upstream updates ----------------------------------------------------------------------


async def test_an_upstream_production_launches_exactly_one_auto_run(hub: Hub) -> None:
    api = hub.client
    await upstream(api)
    block = {**ON_UPDATE, "parameterDefaults": {"mode": "auto"}, "priority": 3}
    workflow = await downstream(api, block, parameters={"mode": "default", "keep": 1})
    produced = await produce_raw(api)
    [run] = await wait_runs(api, 1)
    await settle()
    assert len(await auto_runs(api)) == 1
    assert run["status"] == "succeeded"
    assert run["triggeredBy"] == "asset-materializer"
    trigger = run["trigger"]
    assert trigger["type"] == "auto-materialize"
    assert trigger["reason"] == "upstream-update"
    assert trigger["assetId"] == "Clean"
    assert trigger["partitionKey"] is None
    up_id = (await api.get("/workflows/up")).json()["data"]["workflow"]["id"]
    assert trigger["upstream"] == {
        "assetId": "raw",
        "workflowId": up_id,
        "runId": produced["id"],
        "partitionKey": None,
    }
    assert run["parameters"] == {**assets("clean"), "mode": "auto", "keep": 1}
    assert run["workflowDefinitionId"] == workflow["id"]

    state = await settled(api)
    [decision] = state["decisions"]
    assert decision["outcome"] == "launched"
    assert decision["reason"] == "upstream-update"
    assert decision["runId"] == run["id"]
    assert decision["assetId"] == "Clean"
    assert decision["upstreamAssetId"] == "raw"
    assert decision["eventType"] == "asset.produced"
    assert state["inFlight"] == []
    assert state["cooldown"] == {"failures": 0, "nextEligibleAt": None}
    assert [r["id"] for r in state["runs"]] == [run["id"]]
    assert state["policy"]["onUpstreamUpdate"] is True
    assert state["policy"]["priority"] == 3

    # the producer's own decision is recorded too: it does not consume `raw`, so none for it
    assert (await automation(api, "up"))["decisions"] == []


async def test_stored_partition_parameters_override_defaults(hub: Hub) -> None:
    """A partitioned consumer is launched for the event's partition, with the layering of
    CONTRACT: workflow defaults, the block's parameterDefaults, stored partition parameters,
    then the partition key itself."""
    api = hub.client
    regions = {"type": "static", "keys": ["eu", "us"]}
    await register_workflow(api, "up", [step([{"assetId": "raw", "partitioning": regions}])])
    block = {**ON_UPDATE, "parameterDefaults": {"echo": "block", "tier": "block"}}
    produced = {"assetId": "clean", "partitioning": regions, "autoMaterialize": block}
    defaults = {**assets("clean"), "echo": "workflow", "tier": "workflow", "keep": "workflow"}
    await register_workflow(api, "down", [step([produced], ("raw",))], defaultParameters=defaults)
    url = "/workflows/down/assets/clean/partition-parameters"
    stored = await api.put(url, json={"partitionKey": "eu", "parameters": {"echo": "stored"}})
    assert stored.status_code == 200, stored.text
    for region in ("eu", "us"):
        run = await start_run(api, "up", parameters=assets("raw"), partitionKey=region)
        assert (await wait_for_run(api, run["id"]))["status"] == "succeeded"
    runs = await wait_runs(api, 2)
    by_partition = {run["partitionKey"]: run for run in runs}
    assert set(by_partition) == {"eu", "us"}
    assert by_partition["eu"]["parameters"] == {
        **defaults,
        "echo": "stored",
        "tier": "block",
        "partitionKey": "eu",
    }
    assert by_partition["us"]["parameters"] == {
        **defaults,
        "echo": "block",
        "tier": "block",
        "partitionKey": "us",
    }
    assert by_partition["eu"]["trigger"]["partitionKey"] == "eu"
    assert by_partition["eu"]["trigger"]["upstream"]["partitionKey"] == "eu"
    echoed = (await api.get(f"/workflow-runs/{by_partition['eu']['id']}")).json()["data"]
    assert echoed["output"]["echo"] == "stored"
    history = await api.get("/workflows/down/assets/clean/history?partitionKey=eu")
    assert [item["partitionKey"] for item in history.json()["data"]] == ["eu"]


async def test_a_consumer_without_a_block_is_left_alone(hub: Hub) -> None:
    api = hub.client
    await upstream(api)
    await downstream(api, None)
    await produce_raw(api)
    [decision] = await decided(api, 1)
    assert (decision["outcome"], decision["reason"]) == ("skipped", "no-policy")
    await settle()
    assert await auto_runs(api) == []


async def test_a_disabled_block_is_recorded_as_disabled(hub: Hub) -> None:
    api = hub.client
    await upstream(api)
    await downstream(api, {**ON_UPDATE, "enabled": False})
    await produce_raw(api)
    [decision] = await decided(api, 1)
    assert (decision["outcome"], decision["reason"]) == ("skipped", "disabled")
    assert await auto_runs(api) == []


async def test_a_change_from_before_the_run_started_is_owed_no_follow_up(hub: Hub) -> None:
    """Coalesced into a running run, but produced before it started: the run saw it. The
    explain API says no follow-up is owed, and none runs."""
    api = hub.client
    await upstream(api)
    await downstream(api, parameters={"sleep": 1.0})
    await produce_raw(api)
    first = await running_auto_run(api)
    await produce_raw(api, producedAt=iso_ms(datetime.now(UTC) - timedelta(hours=1)))
    coalesced = (await decided(api, 2))[-1]
    assert (coalesced["outcome"], coalesced["reason"]) == ("coalesced", "in-flight")
    state = await automation(api)
    assert [(f["runId"], f["followUpOwed"]) for f in state["inFlight"]] == [(first["id"], False)]
    await settled(api)
    await settle(1.0)  # a follow-up would have been launched by now
    assert [run["id"] for run in await auto_runs(api)] == [first["id"]]


async def test_an_event_older_than_the_consumer_is_not_stale(hub: Hub) -> None:
    api = hub.client
    await upstream(api)
    await produce_raw(api)  # before `down` exists: nobody to decide for
    await downstream(api)
    manual = await start_run(api, "down")
    assert (await wait_for_run(api, manual["id"]))["status"] == "succeeded"
    an_hour_ago = iso_ms(datetime.now(UTC) - timedelta(hours=1))
    await produce_raw(api, producedAt=an_hour_ago)
    [decision] = await decided(api, 1)
    assert (decision["outcome"], decision["reason"]) == ("skipped", "not-stale")
    await settle()
    assert await auto_runs(api) == []


async def test_events_during_a_run_are_coalesced_into_one_follow_up(hub: Hub) -> None:
    api = hub.client
    await upstream(api)
    await downstream(api, parameters={"sleep": 1.0})
    await produce_raw(api)
    first = await running_auto_run(api)
    await produce_raw(api)
    await produce_raw(api)
    await decided(api, 3)  # the two coalesced into the run are recorded
    state = await automation(api)
    assert [(f["runId"], f["followUpOwed"]) for f in state["inFlight"]] == [(first["id"], True)]
    runs = await wait_runs(api, 2)
    await settle(1.5)  # a third run would have been launched by now
    runs = await auto_runs(api)
    assert len(runs) == 2
    follow_up, original = runs
    assert follow_up["trigger"]["reason"] == "upstream-update"
    assert parse_iso(follow_up["createdAt"]) >= parse_iso(original["completedAt"])
    outcomes = [(d["outcome"], d["reason"]) for d in await decided(api, 4)]
    assert outcomes == [
        ("launched", "upstream-update"),
        ("coalesced", "in-flight"),
        ("coalesced", "in-flight"),
        ("launched", "follow-up"),
    ]


async def test_a_definition_change_is_followed(hub: Hub) -> None:
    api = hub.client
    await upstream(api)
    await downstream(api, None)
    await produce_raw(api)
    await decided(api, 1)
    steps = [step([{"assetId": "clean", "autoMaterialize": ON_UPDATE}], ("raw",))]
    patched = await api.patch("/workflows/down", json={"steps": steps})
    assert patched.status_code == 200, patched.text
    await produce_raw(api)
    [run] = await wait_runs(api, 1)
    assert run["trigger"]["reason"] == "upstream-update"


async def test_a_redelivered_event_changes_nothing(hub: Hub, database: Database) -> None:
    api = hub.client
    await upstream(api)
    await downstream(api)
    produced = await produce_raw(api)
    await wait_runs(api, 1)
    events = await api.get(f"/admin/events?type=asset.produced&correlationId={produced['id']}")
    [event] = events.json()["data"]["events"]
    for _ in range(3):  # as a queue that delivers twice would, or a repair pass
        await hub.services.materializer_queue.enqueue(event["id"])
    await settle()
    assert len(await auto_runs(api)) == 1
    async with database.read() as connection:
        count = await connection.scalar(
            select(func.count()).where(materializer_decisions.c.event_id == event["id"])
        )
    assert count == 1


async def test_a_burst_of_events_makes_at_most_two_runs(hub: Hub, database: Database) -> None:
    api = hub.client
    await upstream(api)
    await produce_raw(api)  # before `down` exists, so the asset exists for its runs
    await downstream(api, parameters={"sleep": 0.5})
    started = time.monotonic()
    await hub.services.ingress.ingest(await orchestrator_events(api, 1000))
    assert time.monotonic() - started < 5
    outcomes = await decision_counts(database, 1000)
    assert outcomes == {"launched": 1, "coalesced": 999}
    await settle(1.0)
    runs = await wait_runs(api, 1)
    assert 1 <= len(runs) <= 2
    assert {run["status"] for run in runs} == {"succeeded"}
    assert await decision_counts(database, 1000) == outcomes  # the follow-up is not one of them


async def orchestrator_events(api: httpx.AsyncClient, count: int) -> list[EventEnvelope]:
    """`asset.produced` of `raw` by `up`, as the orchestrator stores them, `count` at once."""
    up = (await api.get("/workflows/up")).json()["data"]["workflow"]
    now = datetime.now(UTC)
    return [
        EventEnvelope.model_validate(
            {
                "type": "asset.produced",
                "source": "apphub.orchestrator",
                "payload": {
                    "assetId": "raw",
                    "workflowDefinitionId": up["id"],
                    "producedAt": iso_ms(now + timedelta(milliseconds=n % 50)),
                },
            }
        )
        for n in range(count)
    ]


async def decision_counts(database: Database, total: int, seconds: float = 30.0) -> dict[str, int]:
    """Outcomes of `asset.produced` decisions once there are `total` of them."""
    deadline = time.monotonic() + seconds
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        async with database.read() as connection:
            rows = await connection.execute(
                select(materializer_decisions.c.outcome, func.count())
                .where(materializer_decisions.c.event_type == "asset.produced")
                .group_by(materializer_decisions.c.outcome)
            )
            counts = {str(outcome): int(count) for outcome, count in rows}
        if sum(counts.values()) >= total:
            return counts
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {counts} decisions after {seconds}s")


# --- failures and cooldowns --------------------------------------------------------------------


async def test_failures_cool_down_1x_2x_4x_then_success_resets(hub: Hub, tmp_path: Path) -> None:
    """Base 400 ms: the failed run's work runs again when each cooldown ends."""
    api = hub.client
    await upstream(api)
    marker = tmp_path / "calls"
    await downstream(api, parameters={"marker": str(marker), "succeedOn": 4})
    await produce_raw(api)
    runs = list(reversed(await wait_runs(api, 4, seconds=30)))
    assert [run["status"] for run in runs] == ["failed", "failed", "failed", "succeeded"]
    gaps = [
        (parse_iso(later["createdAt"]) - parse_iso(earlier["completedAt"])).total_seconds()
        for earlier, later in itertools.pairwise(runs)
    ]
    for gap, expected in zip(gaps, (0.4, 0.8, 1.6), strict=True):
        assert expected - 0.02 <= gap <= expected + 1.0, gaps
    state = await settled(api)
    assert state["cooldown"] == {"failures": 0, "nextEligibleAt": None}
    assert state["cooldowns"] == []
    reasons = [(d["outcome"], d["reason"]) for d in await decided(api, 4)]
    assert reasons == [("launched", "upstream-update")] * 4


async def test_an_event_during_a_cooldown_is_deferred(database: Database, tmp_path: Path) -> None:
    """Base 3 s: long enough for a second upstream run to land inside the cooldown."""
    async with open_hub(database, tmp_path, materializer_base_backoff_ms=3000) as hub:
        await register_job(hub.client, "produce", "produce")
        await _deferred_during_cooldown(hub.client, tmp_path)


async def _deferred_during_cooldown(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await upstream(api)
    marker = tmp_path / "calls"
    await downstream(api, parameters={"marker": str(marker), "succeedOn": 2})
    await produce_raw(api)
    await wait_runs(api, 1)
    # The run's end reaches the materializer as an event: wait for the cooldown it records.
    state = await wait_for(
        api, "/workflows/down/auto-materialize", lambda s: s["cooldown"]["failures"] == 1
    )
    assert state["cooldowns"][0]["owed"]["reason"] == "upstream-update"
    await produce_raw(api)
    runs = await wait_runs(api, 2, seconds=30)
    assert [run["status"] for run in runs] == ["succeeded", "failed"]
    outcomes = [(d["outcome"], d["reason"]) for d in await decided(api, 3)]
    assert outcomes == [
        ("launched", "upstream-update"),
        ("deferred", "cooldown"),
        ("launched", "upstream-update"),
    ]
    await settle(0.8)
    assert len(await auto_runs(api)) == 2


async def test_a_canceled_auto_run_releases_its_claim(hub: Hub) -> None:
    api = hub.client
    await upstream(api)
    await downstream(api, parameters={"sleep": 5})
    await produce_raw(api)
    running = await running_auto_run(api)
    assert (await api.post(f"/workflow-runs/{running['id']}/cancel")).status_code == 202
    state = await settled(api)
    assert state["cooldown"]["failures"] == 0


# --- freshness timers and stale marks --------------------------------------------------------


async def test_ttl_expiry_relaunches_the_producer(hub: Hub) -> None:
    api = hub.client
    declaration = {"assetId": "snap", "freshness": {"ttlMs": 800}, "autoMaterialize": {}}
    await register_workflow(
        api, "snapshot", [step([declaration])], defaultParameters=assets("snap")
    )
    first = await start_run(api, "snapshot")
    await wait_for_run(api, first["id"])
    [expiry] = await expiries(api, "snapshot")
    assert (expiry["assetId"], expiry["reason"]) == ("snap", "ttl")
    [run] = await wait_runs(api, 1, "snapshot")
    assert run["trigger"]["reason"] == "expiry"
    assert run["trigger"]["expiry"] == {"reason": "ttl"}
    assert run["trigger"]["assetId"] == "snap"
    waited = parse_iso(run["createdAt"]) - parse_iso(expiry["producedAt"])
    assert timedelta(milliseconds=800) <= waited < timedelta(seconds=3)
    expired = await api.get("/admin/events?type=asset.expired")
    assert expired.json()["data"]["events"][0]["payload"]["reason"] == "ttl"


async def test_a_failed_expiry_run_runs_again_when_its_cooldown_ends(
    database: Database, tmp_path: Path
) -> None:
    """The production that expired is still the latest after its rerun failed: the owed
    rerun is not "done" by it, and runs when the cooldown ends."""
    async with open_hub(database, tmp_path, materializer_base_backoff_ms=400) as hub:
        api = hub.client
        await register_job(api, "produce", "produce")
        block = {"parameterDefaults": {"marker": str(tmp_path / "calls"), "succeedOn": 2}}
        declaration = {"assetId": "snap", "freshness": {"ttlMs": 800}, "autoMaterialize": block}
        await register_workflow(
            api, "snapshot", [step([declaration])], defaultParameters=assets("snap")
        )
        await wait_for_run(api, (await start_run(api, "snapshot"))["id"])
        runs = list(reversed(await wait_runs(api, 2, "snapshot", seconds=30)))
        assert [(run["status"], run["trigger"]["reason"]) for run in runs[:2]] == [
            ("failed", "expiry"),
            ("succeeded", "expiry"),
        ]


async def test_a_newer_production_moves_the_timer(hub: Hub) -> None:
    """Judged by what fired, not by when the test looks: no race with a loaded machine."""
    api = hub.client
    cadence = timedelta(milliseconds=1500)
    declaration = {"assetId": "snap", "freshness": {"cadenceMs": 1500}, "autoMaterialize": {}}
    await register_workflow(
        api, "snapshot", [step([declaration])], defaultParameters=assets("snap")
    )
    for pause in (0.6, 0.0):
        run = await start_run(api, "snapshot")
        await wait_for_run(api, run["id"])
        await asyncio.sleep(pause)
    history = (await api.get("/workflows/snapshot/assets/snap/history")).json()["data"]
    newer, older = history[0]["producedAt"], history[1]["producedAt"]
    [expiry] = await expiries(api, "snapshot", newer)
    assert expiry["reason"] == "cadence"
    auto = (await wait_runs(api, 1, "snapshot"))[-1]
    assert auto["trigger"]["expiry"] == {"reason": "cadence"}
    assert parse_iso(auto["createdAt"]) >= parse_iso(newer) + cadence
    # The older production's timer was due first; had it survived, it would have fired first.
    expired = (await api.get("/admin/events?type=asset.expired")).json()["data"]["events"]
    fired_for = [event["payload"]["producedAt"] for event in expired]
    assert older not in fired_for
    assert fired_for[-1] == newer
    decisions = (await automation(api, "snapshot"))["decisions"]
    assert {(d["outcome"], d["reason"]) for d in decisions} == {("launched", "expiry")}


async def test_an_older_production_leaves_the_newest_timer_alone(hub: Hub) -> None:
    """A backfill reporting an hour-old `producedAt` arrives after the newest production:
    the newest one's timer stays, fires, and relaunches the producer; the old one never fires."""
    api = hub.client
    declaration = {"assetId": "snap", "freshness": {"ttlMs": 1500}, "autoMaterialize": {}}
    await register_workflow(
        api, "snapshot", [step([declaration])], defaultParameters=assets("snap")
    )
    await wait_for_run(api, (await start_run(api, "snapshot"))["id"])
    [newest] = await expiries(api, "snapshot")
    old = iso_ms(datetime.now(UTC) - timedelta(hours=1))
    backfill = await start_run(api, "snapshot", parameters=assets("snap", producedAt=old))
    await wait_for_run(api, backfill["id"])
    auto = (await wait_runs(api, 1, "snapshot"))[-1]
    assert auto["trigger"]["reason"] == "expiry"
    expired = (await api.get("/admin/events?type=asset.expired")).json()["data"]["events"]
    fired_for = [event["payload"]["producedAt"] for event in expired]
    assert old not in fired_for
    assert fired_for[-1] == newest["producedAt"]


async def test_a_stale_mark_launches_the_producer(hub: Hub) -> None:
    api = hub.client
    await register_workflow(
        api,
        "snapshot",
        [step([{"assetId": "snap", "autoMaterialize": {}}, {"assetId": "plain"}])],
        defaultParameters=assets("snap"),
    )
    marked = await api.post("/workflows/snapshot/assets/snap/stale", json={"note": "bad rows"})
    assert marked.status_code == 204
    [run] = await wait_runs(api, 1, "snapshot")
    assert run["trigger"]["reason"] == "manual-stale"
    assert run["trigger"]["assetId"] == "snap"
    why = (await api.get("/assets/snap/automation")).json()["data"]
    assert [(d["outcome"], d["reason"], d["runId"]) for d in why["decisions"]] == [
        ("launched", "manual-stale", run["id"])
    ]
    assert why["producers"][0]["workflowSlug"] == "snapshot"
    # `plain` has no block of its own: the workflow's block on `snap` does not opt it in
    assert (await api.post("/workflows/snapshot/assets/plain/stale")).status_code == 204
    plain = await wait_for(api, "/assets/plain/automation", lambda data: len(data["decisions"]) > 1)
    newest = plain["decisions"][0]
    assert (newest["assetId"], newest["outcome"], newest["reason"]) == (
        "plain",
        "skipped",
        "no-policy",
    )
    assert len(await auto_runs(api, "snapshot")) == 1


async def test_a_stale_mark_without_a_block_is_explained(hub: Hub) -> None:
    api = hub.client
    await register_workflow(api, "plain", [step([{"assetId": "table"}])])
    assert (await api.post("/workflows/plain/assets/table/stale")).status_code == 204
    why = await wait_for(api, "/assets/table/automation", lambda data: bool(data["decisions"]))
    assert [(d["outcome"], d["reason"]) for d in why["decisions"]] == [("skipped", "no-policy")]
    assert await auto_runs(api, "plain") == []


# --- the explain API and metrics ------------------------------------------------------------


async def test_explain_routes_refuse_bad_input(hub: Hub) -> None:
    api = hub.client
    await upstream(api)
    missing = await api.get("/workflows/ghost/auto-materialize")
    assert (missing.status_code, missing.json()) == (404, {"error": "workflow not found"})
    unknown = await api.get("/assets/ghost/automation")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "asset not found"})
    for path in ("/workflows/up/auto-materialize", "/assets/raw/automation"):
        for limit in ("0", "201", "many"):
            response = await api.get(f"{path}?limit={limit}")
            assert response.status_code == 400, response.text
            assert "limit" in response.json()["error"]
    found = await api.get("/assets/RAW/automation")
    assert found.status_code == 200
    assert found.json()["data"]["assetId"] == "raw"


async def test_decisions_and_reaction_time_are_exported(hub: Hub) -> None:
    api = hub.client
    await upstream(api)
    await downstream(api)
    await produce_raw(api)
    await wait_runs(api, 1)
    text = (await api.get("/metrics/prometheus")).text
    assert (
        'apphub_materializer_decisions_total{outcome="launched",reason="upstream-update"} 1.0'
        in text
    )
    assert "apphub_materializer_reaction_ms_count 1.0" in text


async def test_only_apphub_s_own_events_launch_runs(hub: Hub, database: Database) -> None:
    """An `asset.produced` published by a service is logged and handled, but decides nothing;
    and nobody can publish under an `apphub.` source."""
    api = hub.client
    await downstream(api)
    forged = {
        "type": "asset.produced",
        "source": "warehouse",
        "payload": {"assetId": "raw", "producedAt": iso_ms(datetime.now(UTC))},
    }
    assert (await api.post("/events", json=forged)).status_code == 202
    spoofed = await api.post("/events", json=forged | {"source": "apphub.orchestrator"})
    assert spoofed.status_code == 400
    assert spoofed.json()["reason"] == "reserved_source"
    assert spoofed.json()["error"].startswith("source:")
    await settle()
    stored = (await api.get("/admin/events?type=asset.produced")).json()["data"]["events"]
    assert [event["source"] for event in stored] == ["warehouse"]
    assert await auto_runs(api) == []
    assert (await automation(api))["decisions"] == []
    async with database.read() as connection:
        handled = await connection.scalar(select(func.count()).select_from(materializer_events))
    assert handled == 1


async def test_the_repair_pass_handles_an_event_whose_hand_off_was_lost(hub: Hub) -> None:
    """Stored and processed, but never handed to the materializer (a queue lost it)."""
    api = hub.client
    await upstream(api)
    await produce_raw(api)
    await downstream(api)
    [envelope] = await orchestrator_events(api, 1)
    received = datetime.now(UTC) - timedelta(seconds=30)
    async with hub.services.database.write() as connection:
        [row] = await event_store.insert_events(connection, [event_row(envelope, received)])
        await event_store.mark(connection, [row.seq], event_store.PROCESSED, None)
    await settle()
    assert await auto_runs(api) == []
    materializer = hub.services.materializer()
    await materializer.load_graph()
    assert await materializer.repair_once() == 1
    [run] = await wait_runs(api, 1)
    assert run["trigger"]["eventId"] == envelope.id
    await settled(api)
    assert await materializer.repair_once() == 0  # handled now: nothing left to repair


async def test_max_age_is_reported_as_staleness_and_never_acted_on(hub: Hub) -> None:
    api = hub.client
    declaration = {"assetId": "snap", "freshness": {"maxAgeMs": 300}, "autoMaterialize": {}}
    await register_workflow(
        api, "snapshot", [step([declaration])], defaultParameters=assets("snap")
    )
    run = await start_run(api, "snapshot")
    await wait_for_run(api, run["id"])
    assert (await automation(api, "snapshot"))["nextExpiries"] == []
    await asyncio.sleep(0.6)
    graph = (await api.get("/assets/graph")).json()["data"]
    [snap] = [asset for asset in graph["assets"] if asset["assetId"] == "snap"]
    assert snap["hasStalePartitions"] is True
    assert [entry["reason"] for entry in snap["stalePartitions"]] == ["expired"]
    assert await auto_runs(api, "snapshot") == []
    assert (await automation(api, "snapshot"))["decisions"] == []
