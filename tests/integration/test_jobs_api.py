"""`/jobs` over HTTP, on every backend."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import job_body


async def test_create_list_get_and_patch_a_job(api: httpx.AsyncClient) -> None:
    created = await api.post(
        "/jobs",
        json=job_body(
            "scan",
            parametersSchema={"type": "object", "properties": {"root": {"type": "string"}}},
            defaultParameters={"root": "."},
            timeoutMs=60_000,
            retryPolicy={"maxAttempts": 3, "strategy": "exponential", "initialDelayMs": 500},
        ),
    )
    assert created.status_code == 201
    job = created.json()["data"]
    assert job["slug"] == "scan"
    assert job["version"] == 1
    assert job["retryPolicy"]["maxAttempts"] == 3
    assert job["createdAt"].endswith("Z")
    assert len(job["createdAt"]) == len("2026-01-01T00:00:00.000Z")

    listed = (await api.get("/jobs")).json()["data"]
    assert [entry["slug"] for entry in listed] == ["scan"]

    detail = (await api.get("/jobs/scan")).json()["data"]
    assert detail["job"]["id"] == job["id"]
    assert detail["runs"] == []

    patched = await api.patch("/jobs/scan", json={"name": "Scan a tree", "timeoutMs": 5_000})
    assert patched.status_code == 200
    assert patched.json()["data"]["name"] == "Scan a tree"
    assert patched.json()["data"]["version"] == 2
    assert patched.json()["data"]["createdAt"] == job["createdAt"]
    again = (await api.get("/jobs/scan")).json()["data"]["job"]
    assert (again["name"], again["timeoutMs"], again["version"]) == ("Scan a tree", 5_000, 2)
    assert again["defaultParameters"] == {"root": "."}


async def test_duplicate_slug_is_a_conflict_and_keeps_the_first(api: httpx.AsyncClient) -> None:
    assert (await api.post("/jobs", json=job_body("scan", name="First"))).status_code == 201
    second = await api.post("/jobs", json=job_body("scan", name="Second"))
    assert second.status_code == 409
    assert "scan" in second.json()["error"]
    stored = (await api.get("/jobs/scan")).json()["data"]["job"]
    assert stored["name"] == "First"


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"timeoutMs": 999}, "timeoutMs", "greater_than_equal"),
        ({"timeoutMs": 86_400_001}, "timeoutMs", "less_than_equal"),
        ({"slug": "Has Spaces"}, "slug", "string_pattern_mismatch"),
        ({"runtime": "java"}, "runtime", "literal_error"),
        ({"entryPoint": "not an entry point"}, "entryPoint", "value_error"),
        ({"retryPolicy": {"maxAttempts": 11}}, "retryPolicy.maxAttempts", "less_than_equal"),
        ({"retryPolicy": {"jitter": 1.5}}, "retryPolicy.jitter", "less_than_equal"),
        ({"parametersSchema": {"type": "nonsense"}}, "parametersSchema", "value_error"),
        ({"colour": "blue"}, "colour", "extra_forbidden"),
    ],
)
async def test_invalid_job_is_400_naming_field_and_rule(
    api: httpx.AsyncClient, overrides: dict[str, object], field: str, rule: str
) -> None:
    response = await api.post("/jobs", json=job_body("scan") | overrides)
    assert response.status_code == 400
    body = response.json()
    assert body["reason"] == "validation_failed"
    assert {"field": field, "rule": rule} in [
        {"field": problem["field"], "rule": problem["rule"]} for problem in body["detail"]["errors"]
    ]
    assert body["error"].startswith(f"{field}: ")
    assert (await api.get("/jobs")).json()["data"] == []


async def test_command_runtime_takes_a_command_line(api: httpx.AsyncClient) -> None:
    ok = await api.post(
        "/jobs", json=job_body("shell", runtime="command", entryPoint="python3 -c 'print(1)'")
    )
    assert ok.status_code == 201
    unclosed = await api.post(
        "/jobs", json=job_body("broken", runtime="command", entryPoint="echo 'unclosed")
    )
    assert unclosed.status_code == 400
    assert "command line" in unclosed.json()["error"]


async def test_patch_that_breaks_a_rule_changes_nothing(api: httpx.AsyncClient) -> None:
    await api.post("/jobs", json=job_body("scan"))
    bad_runtime = await api.patch("/jobs/scan", json={"runtime": "command", "entryPoint": "'"})
    assert bad_runtime.status_code == 400
    renamed = await api.patch("/jobs/scan", json={"slug": "other"})
    assert renamed.status_code == 400
    assert renamed.json()["detail"]["errors"][0]["field"] == "slug"
    stored = (await api.get("/jobs/scan")).json()["data"]["job"]
    assert (stored["version"], stored["runtime"]) == (1, "python")


async def test_unknown_job_is_404(api: httpx.AsyncClient) -> None:
    for response in (
        await api.get("/jobs/missing"),
        await api.patch("/jobs/missing", json={"name": "x"}),
        await api.get("/jobs/missing/runs"),
    ):
        assert response.status_code == 404
        assert response.json() == {"error": "job not found"}


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/jobs", content=b'{"slug": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"]["errors"][0]["field"] == "body"
    assert "JSON" in response.json()["error"]
