"""`/workflows` over HTTP, on every backend: definitions, DAG checks, limits, declarations."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from apphub.store.database import Database
from apphub.store.workflows import get_workflow, list_asset_declarations
from tests.factories import job_body, step, workflow_body


@pytest.fixture
async def jobs(api: httpx.AsyncClient) -> None:
    for slug in ("scan", "render", "archive"):
        assert (await api.post("/jobs", json=job_body(slug))).status_code == 201


pytestmark = pytest.mark.usefixtures("jobs")


async def _workflows(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = (await api.get("/workflows")).json()["data"]
    return listed


async def test_create_stores_the_dag_dependents_and_default_trigger(
    api: httpx.AsyncClient,
) -> None:
    steps = [
        step("scan"),
        step("left", "scan", job="render"),
        step("right", "scan", job="render"),
        step("join", "left", "right", job="archive"),
    ]
    response = await api.post("/workflows", json=workflow_body("report", steps))
    assert response.status_code == 201
    workflow = response.json()["data"]
    assert workflow["version"] == 1
    assert workflow["triggers"] == [{"type": "manual", "options": None}]
    dag = workflow["dag"]
    assert dag["roots"] == ["scan"]
    assert dag["topologicalOrder"] == ["scan", "left", "right", "join"]
    assert dag["adjacency"] == {
        "scan": ["left", "right"],
        "left": ["join"],
        "right": ["join"],
        "join": [],
    }
    assert {(edge["from"], edge["to"]) for edge in dag["edges"]} == {
        ("scan", "left"),
        ("scan", "right"),
        ("left", "join"),
        ("right", "join"),
    }
    dependents = {entry["id"]: entry["dependents"] for entry in workflow["steps"]}
    assert dependents == {
        "scan": ["left", "right"],
        "left": ["join"],
        "right": ["join"],
        "join": [],
    }
    assert all(entry["type"] == "job" for entry in workflow["steps"])

    detail = (await api.get("/workflows/report")).json()["data"]
    assert detail["workflow"]["dag"] == dag
    assert detail["runs"] == []
    assert [entry["slug"] for entry in await _workflows(api)] == ["report"]
    assert (await api.get("/workflows/report/runs")).json()["data"] == []


async def test_empty_triggers_become_manual(api: httpx.AsyncClient) -> None:
    response = await api.post("/workflows", json=workflow_body("report", triggers=[]))
    assert response.json()["data"]["triggers"] == [{"type": "manual", "options": None}]


async def test_service_and_fanout_steps_are_accepted(api: httpx.AsyncClient) -> None:
    steps = [
        step("seed"),
        {
            "id": "call",
            "type": "service",
            "serviceSlug": "inventory",
            "dependsOn": ["seed"],
            "request": {
                "path": "/items/{{ parameters.id }}",
                "method": "POST",
                "headers": {
                    "Authorization": {
                        "secret": {"source": "env", "key": "TOKEN"},
                        "prefix": "Bearer ",
                    }
                },
            },
        },
        {
            "id": "each",
            "type": "fanout",
            "dependsOn": ["seed"],
            "collection": "{{ steps.seed.result.items }}",
            "template": {"id": "render-one", "jobSlug": "render"},
            "maxItems": 500,
            "storeResultsAs": "rendered",
        },
    ]
    response = await api.post("/workflows", json=workflow_body("mixed", steps))
    assert response.status_code == 201, response.text
    stored = {entry["id"]: entry for entry in response.json()["data"]["steps"]}
    assert stored["call"]["requireHealthy"] is True
    assert stored["call"]["allowDegraded"] is False
    assert stored["each"]["maxConcurrency"] == 10
    assert stored["each"]["template"]["type"] == "job"


async def test_fanout_template_job_must_exist(api: httpx.AsyncClient) -> None:
    steps = [
        {
            "id": "each",
            "type": "fanout",
            "collection": [1, 2],
            "template": {"id": "t", "jobSlug": "ghost"},
        }
    ]
    response = await api.post("/workflows", json=workflow_body("fan", steps))
    assert response.status_code == 400
    assert response.json()["reason"] == "unknown_job"
    assert response.json()["detail"]["jobSlug"] == "ghost"


@pytest.mark.parametrize(
    ("steps", "reason", "detail"),
    [
        ([step("a"), step("a")], "duplicate_step", {"stepId": "a"}),
        (
            [step("a"), step("b", "ghost")],
            "missing_dependency",
            {"stepId": "b", "dependencyId": "ghost"},
        ),
        ([step("a", job="nope")], "unknown_job", {"jobSlug": "nope", "stepId": "a"}),
    ],
)
async def test_dag_errors_name_reason_and_detail(
    api: httpx.AsyncClient, steps: list[dict[str, Any]], reason: str, detail: dict[str, str]
) -> None:
    response = await api.post("/workflows", json=workflow_body("broken", steps))
    assert response.status_code == 400
    assert response.json()["reason"] == reason
    assert response.json()["detail"] == detail
    assert await _workflows(api) == []


async def test_cycle_is_reported_with_the_steps_in_it(api: httpx.AsyncClient) -> None:
    steps = [
        step("start"),
        step("a", "start", "c"),
        step("b", "a"),
        step("c", "b"),
        step("end", "c"),
    ]
    response = await api.post("/workflows", json=workflow_body("loop", steps))
    assert response.status_code == 400
    body = response.json()
    assert body["reason"] == "cycle_detected"
    cycle = body["detail"]["cycle"]
    assert sorted(cycle) == ["a", "b", "c"]
    depends_on = {entry["id"]: entry["dependsOn"] for entry in steps}
    for index, step_id in enumerate(cycle):
        follower = cycle[(index + 1) % len(cycle)]
        assert step_id in depends_on[follower]
    assert await _workflows(api) == []


@pytest.mark.parametrize(
    ("steps", "field", "rule"),
    [
        ([step(f"s{i}") for i in range(101)], "steps", "too_long"),
        (
            [step(f"d{i}") for i in range(26)] + [step("wide", *[f"d{i}" for i in range(26)])],
            "steps[26].dependsOn",
            "too_long",
        ),
        (
            [step("a", produces=[{"assetId": "-bad id"}])],
            "steps[0].produces[0].assetId",
            "string_pattern_mismatch",
        ),
        (
            [step("a", produces=[{"assetId": "x" * 201}])],
            "steps[0].produces[0].assetId",
            "string_too_long",
        ),
        ([step("a", timeoutMs=500)], "steps[0].timeoutMs", "greater_than_equal"),
        ([step("a", timeoutMs=86_400_001)], "steps[0].timeoutMs", "less_than_equal"),
        (
            [step("a", consumes=[{"assetId": f"in.{i}"} for i in range(51)])],
            "steps[0].consumes",
            "too_long",
        ),
        ([step("a:b")], "steps[0].id", "string_pattern_mismatch"),
        ([{"id": "x", "type": "bogus"}], "steps[0]", "step_type"),
        (
            [
                {
                    "id": "x",
                    "type": "fanout",
                    "collection": [],
                    "template": {"id": "t", "jobSlug": "scan"},
                    "maxItems": 10_001,
                }
            ],
            "steps[0].maxItems",
            "less_than_equal",
        ),
        (
            [
                step(
                    "a", produces=[{"assetId": "r", "partitioning": {"type": "static", "keys": []}}]
                )
            ],
            "steps[0].produces[0].partitioning.keys",
            "too_short",
        ),
        (
            [
                step(
                    "a",
                    produces=[
                        {
                            "assetId": "r",
                            "partitioning": {
                                "type": "timeWindow",
                                "granularity": "day",
                                "timezone": "Mars/Olympus",
                            },
                        }
                    ],
                )
            ],
            "steps[0].produces[0].partitioning.timezone",
            "value_error",
        ),
        (
            [step("a", produces=[{"assetId": "r"}, {"assetId": "R"}])],
            "steps[0].produces",
            "value_error",
        ),
        ([], "steps", "too_short"),
    ],
)
async def test_limits_are_400_naming_the_field(
    api: httpx.AsyncClient, steps: list[dict[str, Any]], field: str, rule: str
) -> None:
    response = await api.post("/workflows", json=workflow_body("limits", steps))
    assert response.status_code == 400, response.text
    problems = response.json()["detail"]["errors"]
    assert {"field": field, "rule": rule} in [
        {"field": problem["field"], "rule": problem["rule"]} for problem in problems
    ]
    assert await _workflows(api) == []


async def test_scheduler_metadata_is_checked(api: httpx.AsyncClient) -> None:
    ok = await api.post(
        "/workflows",
        json=workflow_body("ok", metadata={"scheduler": {"maxParallel": 4}, "owner": "data"}),
    )
    assert ok.status_code == 201
    bad = await api.post(
        "/workflows", json=workflow_body("bad", metadata={"scheduler": {"maxParallel": 0}})
    )
    assert bad.status_code == 400
    assert "maxParallel" in bad.json()["error"]


async def test_duplicate_workflow_slug_is_a_conflict(api: httpx.AsyncClient) -> None:
    assert (await api.post("/workflows", json=workflow_body("report"))).status_code == 201
    again = await api.post("/workflows", json=workflow_body("report", name="Other"))
    assert again.status_code == 409
    assert (await api.get("/workflows/report")).json()["data"]["workflow"]["name"] == "Report"


async def test_patch_bumps_version_and_rebuilds_the_dag(api: httpx.AsyncClient) -> None:
    await api.post("/workflows", json=workflow_body("report"))
    steps = [
        step("scan"),
        step("render", "scan", job="render"),
        step("pack", "render", job="archive"),
    ]
    response = await api.patch("/workflows/report", json={"steps": steps, "description": "v2"})
    assert response.status_code == 200, response.text
    workflow = response.json()["data"]
    assert workflow["version"] == 2
    assert workflow["description"] == "v2"
    assert workflow["dag"]["topologicalOrder"] == ["scan", "render", "pack"]
    renamed = await api.patch("/workflows/report", json={"name": "Renamed"})
    assert renamed.json()["data"]["version"] == 3
    assert renamed.json()["data"]["dag"]["topologicalOrder"] == ["scan", "render", "pack"]


async def test_patch_that_makes_a_cycle_changes_nothing(api: httpx.AsyncClient) -> None:
    await api.post("/workflows", json=workflow_body("report"))
    response = await api.patch(
        "/workflows/report", json={"steps": [step("a", "b"), step("b", "a")]}
    )
    assert response.status_code == 400
    assert response.json()["reason"] == "cycle_detected"
    stored = (await api.get("/workflows/report")).json()["data"]["workflow"]
    assert stored["version"] == 1
    assert [entry["id"] for entry in stored["steps"]] == ["scan", "render"]


async def test_patch_unknown_workflow_is_404(api: httpx.AsyncClient) -> None:
    response = await api.patch("/workflows/ghost", json={"name": "x"})
    assert response.status_code == 404
    assert response.json() == {"error": "workflow not found"}
    assert (await api.get("/workflows/ghost")).status_code == 404


async def test_asset_declarations_follow_create_and_update(
    api: httpx.AsyncClient, database: Database
) -> None:
    steps = [
        step(
            "scan",
            produces=[
                {
                    "assetId": "Directory.Insights.Report",
                    "schema": {"type": "object"},
                    "freshness": {"ttlMs": 60_000},
                    "autoMaterialize": {"onUpstreamUpdate": True, "priority": 5},
                }
            ],
        ),
        step("pack", "scan", job="archive", consumes=[{"assetId": "directory.insights.report"}]),
    ]
    assert (await api.post("/workflows", json=workflow_body("report", steps))).status_code == 201
    async with database.read() as connection:
        workflow = await get_workflow(connection, "report")
        assert workflow is not None
        rows = await list_asset_declarations(connection, workflow.id)
    assert [(row["step_id"], row["direction"], row["asset_key"]) for row in rows] == [
        ("scan", "produces", "directory.insights.report"),
        ("pack", "consumes", "directory.insights.report"),
    ]
    assert rows[0]["asset_id"] == "Directory.Insights.Report"
    assert rows[0]["freshness"]["ttlMs"] == 60_000
    assert rows[0]["auto_materialize"]["onUpstreamUpdate"] is True
    assert rows[0]["asset_schema"] == {"type": "object"}

    new_steps = [step("scan", produces=[{"assetId": "other.asset"}])]
    assert (await api.patch("/workflows/report", json={"steps": new_steps})).status_code == 200
    async with database.read() as connection:
        rows = await list_asset_declarations(connection, workflow.id)
    assert [(row["step_id"], row["direction"], row["asset_id"]) for row in rows] == [
        ("scan", "produces", "other.asset")
    ]


async def test_run_listing_validates_its_paging(api: httpx.AsyncClient) -> None:
    await api.post("/workflows", json=workflow_body("report"))
    assert (await api.get("/workflows/report/runs?limit=51")).status_code == 400
    assert (await api.get("/workflows/report/runs?limit=0")).status_code == 400
    assert (await api.get("/workflows/report/runs?offset=-1")).status_code == 400
    assert (await api.get("/workflows/report/runs?limit=50")).status_code == 200
