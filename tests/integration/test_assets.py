"""Assets over HTTP on every backend: capture, history, partitions, stale marks, the graph."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.runs import register_job, register_workflow, start_run, steps_of, wait_for_run

REPORT = "directory.insights.report"


@pytest.fixture(autouse=True)
async def jobs(api: httpx.AsyncClient) -> None:
    await register_job(api, "produce", "produce")
    await register_job(api, "consume", "consume")


def produces(asset: str, **declaration: Any) -> dict[str, Any]:
    return {"assetId": asset, **declaration}


def producing_step(step_id: str, *declarations: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "jobSlug": "produce", "produces": list(declarations), **fields}


async def run_producing(
    api: httpx.AsyncClient, slug: str, assets: list[dict[str, Any]], **body: Any
) -> dict[str, Any]:
    run = await start_run(api, slug, parameters={"assets": assets}, **body)
    return await wait_for_run(api, run["id"])


async def test_latest_and_history(api: httpx.AsyncClient) -> None:
    schema = {"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}}
    await register_workflow(
        api,
        "report",
        [
            producing_step("build", produces(REPORT, schema=schema, freshness={"ttlMs": 60_000})),
            {
                "id": "read",
                "jobSlug": "consume",
                "dependsOn": ["build"],
                "consumes": [{"assetId": REPORT}],
            },
        ],
    )
    first = await run_producing(api, "report", [{"assetId": REPORT, "payload": {"count": 1}}])
    second = await run_producing(
        api, "report", [{"assetId": "Directory.Insights.Report", "payload": {"count": 2}}]
    )
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")

    assets = (await api.get("/workflows/report/assets")).json()["data"]
    assert len(assets) == 1
    entry = assets[0]
    assert entry["assetId"] == REPORT
    assert entry["producers"] == [{"stepId": "build"}]
    assert entry["consumers"] == [{"stepId": "read"}]
    assert entry["available"] is True
    assert entry["latest"]["runId"] == second["id"]
    assert entry["latest"]["payload"] == {"count": 2}
    assert entry["latest"]["freshness"]["ttlMs"] == 60_000
    assert entry["latest"]["schema"] == schema

    history = (await api.get(f"/workflows/report/assets/{REPORT}/history")).json()["data"]
    assert [item["runId"] for item in history] == [second["id"], first["id"]]
    assert history[0]["producedAt"] >= history[1]["producedAt"]
    one = (await api.get(f"/workflows/report/assets/{REPORT.upper()}/history?limit=1")).json()
    assert [item["runId"] for item in one["data"]] == [second["id"]]
    missing = await api.get("/workflows/report/assets/nope/history")
    assert (missing.status_code, missing.json()) == (404, {"error": "asset not found for workflow"})
    assert (await api.get(f"/workflows/report/assets/{REPORT}/history?limit=0")).status_code == 400
    assert (await api.get(f"/workflows/ghost/assets/{REPORT}/history")).status_code == 404


async def test_payload_failing_its_schema_fails_the_step_and_records_nothing(
    api: httpx.AsyncClient,
) -> None:
    schema = {"type": "object", "required": ["count"]}
    await register_workflow(
        api, "strict", [producing_step("build", produces(REPORT, schema=schema))]
    )
    run = await run_producing(api, "strict", [{"assetId": REPORT, "payload": {"size": 3}}])
    assert run["status"] == "failed"
    step = (await steps_of(api, run["id"]))["build"]
    assert step["failureReason"] == "invalid-asset"
    assert "'count' is a required property" in step["errorMessage"]
    assert (await api.get(f"/workflows/strict/assets/{REPORT}/history")).json()["data"] == []
    assert (await api.get("/workflows/strict/assets")).json()["data"][0]["available"] is False


async def test_undeclared_assets_are_noted_on_the_step_and_not_stored(
    api: httpx.AsyncClient,
) -> None:
    await register_workflow(api, "loose", [producing_step("build", produces(REPORT))])
    run = await run_producing(
        api,
        "loose",
        [
            {"assetId": REPORT, "payload": 1},
            {"assetId": "something.else", "payload": 2},
        ],
    )
    assert run["status"] == "succeeded"
    step = (await steps_of(api, run["id"]))["build"]
    assert step["metrics"]["undeclaredAssets"] == ["something.else"]
    assert step["metrics"]["assets"] == [{"assetId": REPORT, "partitionKey": None}]
    assert (await api.get("/workflows/loose/assets/something.else/history")).status_code == 404


STATIC = {"type": "static", "keys": ["eu", "us", "apac"]}


async def test_static_partitions(api: httpx.AsyncClient) -> None:
    await register_workflow(
        api,
        "regional",
        [
            producing_step("build", produces(REPORT, partitioning=STATIC)),
        ],
    )
    no_key = await api.post("/workflows/regional/run", json={})
    assert no_key.status_code == 400
    assert no_key.json()["reason"] == "invalid_partition"
    assert "one of: eu, us, apac" in no_key.json()["error"]
    unknown = await api.post("/workflows/regional/run", json={"partitionKey": "mars"})
    assert unknown.status_code == 400
    assert "unknown partition 'mars'" in unknown.json()["error"]
    assert (await api.get("/workflow-runs")).json()["data"] == []

    asset = [{"assetId": REPORT, "payload": {"ok": True}}]
    assert (await run_producing(api, "regional", asset, partitionKey="eu"))["status"] == "succeeded"
    assert (await run_producing(api, "regional", asset, partitionKey="eu"))["status"] == "succeeded"
    us = await run_producing(api, "regional", asset, partitionKey="us")
    assert us["status"] == "succeeded"

    eu_history = (
        await api.get(f"/workflows/regional/assets/{REPORT}/history?partitionKey=eu")
    ).json()["data"]
    assert len(eu_history) == 2
    assert all(item["partitionKey"] == "eu" for item in eu_history)
    partitions = (await api.get(f"/workflows/regional/assets/{REPORT}/partitions")).json()["data"]
    assert partitions["partitioning"] == STATIC
    by_key = {p["partitionKey"]: p for p in partitions["partitions"]}
    assert [p["partitionKey"] for p in partitions["partitions"]] == ["eu", "us", "apac"]
    assert (by_key["eu"]["materializations"], by_key["us"]["materializations"]) == (2, 1)
    assert by_key["us"]["latest"]["runId"] == us["id"]
    assert (by_key["apac"]["materializations"], by_key["apac"]["latest"]) == (0, None)


async def test_time_window_partitions(api: httpx.AsyncClient) -> None:
    daily = {"type": "timeWindow", "granularity": "day", "timezone": "UTC", "lookbackWindows": 3}
    await register_workflow(
        api, "daily", [producing_step("build", produces(REPORT, partitioning=daily))]
    )
    for bad in ("2026-13-01", "2026-11-23T10", "yesterday"):
        response = await api.post("/workflows/daily/run", json={"partitionKey": bad})
        assert response.status_code == 400, bad
        assert (
            "day window" in response.json()["error"]
            or "invalid partition" in (response.json()["error"])
        )
    run = await run_producing(
        api, "daily", [{"assetId": REPORT, "payload": 1}], partitionKey="2026-11-23"
    )
    assert run["status"] == "succeeded"
    partitions = (await api.get(f"/workflows/daily/assets/{REPORT}/partitions?lookback=5")).json()[
        "data"
    ]
    keys = [p["partitionKey"] for p in partitions["partitions"]]
    assert len(keys) == 5
    assert keys == sorted(keys, reverse=True)
    history = (await api.get(f"/workflows/daily/assets/{REPORT}/history")).json()["data"]
    assert history[0]["partitionKey"] == "2026-11-23"


async def test_stale_marks(api: httpx.AsyncClient) -> None:
    await register_workflow(
        api,
        "regional",
        [
            producing_step("build", produces(REPORT, partitioning=STATIC)),
        ],
    )
    url = f"/workflows/regional/assets/{REPORT}"
    marked = await api.post(f"{url}/stale", json={"partitionKey": "eu", "note": "bad data"})
    assert marked.status_code == 204
    assert (await api.post(f"{url}/stale", json={"partitionKey": "mars"})).status_code == 400
    assert (await api.post(f"{url}/stale", json={"partitionKey": "eu", "x": 1})).status_code == 400

    async def stale() -> dict[str, bool]:
        data = (await api.get(f"{url}/partitions")).json()["data"]
        return {p["partitionKey"]: p["isStale"] for p in data["partitions"]}

    assert await stale() == {"eu": True, "us": False, "apac": False}
    graph = (await api.get("/assets/graph")).json()["data"]
    node = next(a for a in graph["assets"] if a["assetId"] == REPORT)
    assert node["hasStalePartitions"] is True
    assert node["stalePartitions"][0]["note"] == "bad data"
    cleared = await api.request("DELETE", f"{url}/stale", json={"partitionKey": "eu"})
    assert cleared.status_code == 204
    assert await stale() == {"eu": False, "us": False, "apac": False}

    await api.post(f"{url}/stale", json={"partitionKey": "us"})
    await run_producing(api, "regional", [{"assetId": REPORT, "payload": 1}], partitionKey="us")
    assert (await stale())["us"] is False, "a new production clears the mark"


async def test_partition_parameters(api: httpx.AsyncClient) -> None:
    await register_workflow(
        api,
        "regional",
        [
            producing_step("build", produces(REPORT, partitioning=STATIC)),
            producing_step("plain", produces("plain.asset")),
        ],
    )
    url = f"/workflows/regional/assets/{REPORT}/partition-parameters"
    stored = await api.put(url, json={"partitionKey": "eu", "parameters": {"region": "eu-west"}})
    assert stored.status_code == 200
    assert stored.json()["data"]["parameters"] == {"region": "eu-west"}
    partitions = (await api.get(f"/workflows/regional/assets/{REPORT}/partitions")).json()["data"]
    by_key = {p["partitionKey"]: p for p in partitions["partitions"]}
    assert by_key["eu"]["parameters"] == {"region": "eu-west"}
    assert by_key["us"]["parameters"] is None
    assert (await api.put(url, json={"partitionKey": "mars", "parameters": {}})).status_code == 400
    assert (await api.put(url, json={"partitionKey": "eu"})).status_code == 400
    plain = await api.put(
        "/workflows/regional/assets/plain.asset/partition-parameters",
        json={"partitionKey": "eu", "parameters": {}},
    )
    assert plain.status_code == 400
    assert plain.json()["reason"] == "not_partitioned"
    deleted = await api.request("DELETE", url, json={"partitionKey": "eu"})
    assert deleted.status_code == 204
    partitions = (await api.get(f"/workflows/regional/assets/{REPORT}/partitions")).json()["data"]
    assert all(p["parameters"] is None for p in partitions["partitions"])


async def test_graph_flags_outdated_upstreams_across_workflows(api: httpx.AsyncClient) -> None:
    await register_workflow(api, "upstream", [producing_step("make", produces("raw.data"))])
    await register_workflow(
        api,
        "downstream",
        [
            {
                **producing_step("derive", produces("derived.data")),
                "consumes": [{"assetId": "raw.data"}],
            },
        ],
    )

    async def derived() -> dict[str, Any]:
        graph = (await api.get("/assets/graph")).json()["data"]
        assert {"from": "raw.data", "to": "derived.data", "workflowSlug": "downstream"} in (
            graph["edges"]
        )
        return next(a for a in graph["assets"] if a["assetId"] == "derived.data")

    assert (await derived())["hasOutdatedUpstreams"] is False  # nothing produced yet
    await run_producing(api, "upstream", [{"assetId": "raw.data", "payload": 1}])
    node = await derived()
    assert node["hasOutdatedUpstreams"] is True
    assert node["outdatedUpstreamAssetIds"] == ["raw.data"]
    await run_producing(api, "downstream", [{"assetId": "derived.data", "payload": 2}])
    assert (await derived())["hasOutdatedUpstreams"] is False
    await run_producing(api, "upstream", [{"assetId": "raw.data", "payload": 3}])
    assert (await derived())["outdatedUpstreamAssetIds"] == ["raw.data"]
    raw = next(
        a
        for a in (await api.get("/assets/graph")).json()["data"]["assets"]
        if a["assetId"] == "raw.data"
    )
    assert raw["producers"] == [{"workflowSlug": "upstream", "stepId": "make"}]
    assert raw["consumers"] == [{"workflowSlug": "downstream", "stepId": "derive"}]
    assert len(raw["latestMaterializations"]) == 1


async def test_missing_dependency_runs_the_producer_and_then_goes_on(
    api: httpx.AsyncClient,
) -> None:
    await register_workflow(
        api,
        "upstream",
        [
            producing_step(
                "make",
                produces("raw.data"),
                parameters={"assets": [{"assetId": "raw.data", "payload": {"v": 1}}]},
            )
        ],
    )
    await register_workflow(
        api,
        "downstream",
        [
            {"id": "use", "jobSlug": "consume", "consumes": [{"assetId": "raw.data"}]},
        ],
    )
    consumer = await start_run(api, "downstream")
    finished = await wait_for_run(api, consumer["id"])
    assert finished["status"] == "succeeded", finished
    producers = (await api.get("/workflow-runs?workflow=upstream")).json()["data"]
    assert len(producers) == 1
    producer = producers[0]
    assert producer["status"] == "succeeded"
    assert producer["triggeredBy"] == "asset-materializer"
    assert producer["trigger"]["type"] == "auto-materialize"
    assert producer["trigger"]["reason"] == "missing-dependency"
    assert producer["trigger"]["assetId"] == "raw.data"
    step = (await steps_of(api, consumer["id"]))["use"]
    assert step["metrics"]["requestedRuns"] == ["raw.data"]
    again = await wait_for_run(api, (await start_run(api, "downstream"))["id"])
    assert again["status"] == "succeeded"
    assert len((await api.get("/workflow-runs?workflow=upstream")).json()["data"]) == 1


async def test_missing_asset_with_no_producer_fails_at_once(api: httpx.AsyncClient) -> None:
    await register_workflow(
        api,
        "orphan",
        [
            {"id": "use", "jobSlug": "consume", "consumes": [{"assetId": "never.made"}]},
        ],
    )
    finished = await wait_for_run(api, (await start_run(api, "orphan"))["id"])
    step = (await steps_of(api, finished["id"]))["use"]
    assert finished["status"] == "failed"
    assert step["failureReason"] == "missing-asset"
    assert "never.made" in step["errorMessage"]
    assert "no workflow produces" in step["errorMessage"]


async def test_waiting_for_an_asset_times_out_naming_it(api: httpx.AsyncClient) -> None:
    await register_job(api, "fail", "fail")
    await register_workflow(
        api,
        "broken-upstream",
        [
            {"id": "make", "jobSlug": "fail", "produces": [{"assetId": "raw.data"}]},
        ],
    )
    await register_workflow(
        api,
        "patient",
        [
            {
                "id": "use",
                "jobSlug": "consume",
                "consumes": [{"assetId": "raw.data"}],
                "timeoutMs": 1500,
            },
        ],
    )
    finished = await wait_for_run(api, (await start_run(api, "patient"))["id"])
    step = (await steps_of(api, finished["id"]))["use"]
    assert finished["status"] == "failed"
    assert step["failureReason"] == "missing-asset"
    assert "timed out" in step["errorMessage"]
    assert "raw.data" in step["errorMessage"]
    upstream = (await api.get("/workflow-runs?workflow=broken-upstream")).json()["data"]
    assert [run["status"] for run in upstream] == ["failed"]
