"""Scopes, refusals and the audit log: each guarded call leaves a row; refusals change nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from apphub.api.app import create_app
from apphub.settings import Settings
from apphub.store.database import Database
from tests.conftest import JOBS_WRITER_TOKEN, READER_TOKEN, bearer
from tests.factories import job_body, workflow_body


async def _audit(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await api.get("/admin/audit-logs", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()["data"]
    return page


async def test_no_token_is_401_audited_and_changes_nothing(api: httpx.AsyncClient) -> None:
    response = await api.post("/jobs", json=job_body("scan"), headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json() == {"error": "authorization required"}
    assert (await api.get("/jobs")).json()["data"] == []
    entry = (await _audit(api))["auditLogs"][0]
    assert entry["action"] == "job.create"
    assert entry["resource"] == "/jobs"
    assert entry["outcome"] == "failed"
    assert entry["subject"] is None
    assert entry["statusCode"] == 401


async def test_unknown_token_is_403(api: httpx.AsyncClient) -> None:
    response = await api.post("/jobs", json=job_body("scan"), headers=bearer("not-a-token"))
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden"}
    assert (await api.get("/jobs")).json()["data"] == []
    entry = (await _audit(api))["auditLogs"][0]
    assert (entry["outcome"], entry["reason"], entry["statusCode"]) == (
        "failed",
        "unknown token",
        403,
    )


async def test_missing_scope_is_403_audited_and_changes_nothing(api: httpx.AsyncClient) -> None:
    await api.post("/jobs", json=job_body("scan"))
    response = await api.post(
        "/workflows",
        json=workflow_body("report", steps=[{"id": "a", "jobSlug": "scan"}]),
        headers=bearer(JOBS_WRITER_TOKEN),
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert (await api.get("/workflows")).json()["data"] == []
    patch = await api.patch("/jobs/scan", json={"name": "x"}, headers=bearer(READER_TOKEN))
    assert patch.status_code == 403
    assert (await api.get("/jobs/scan")).json()["data"]["job"]["name"] == "Scan"
    entries = (await _audit(api))["auditLogs"]
    assert [(e["subject"], e["action"], e["outcome"], e["reason"]) for e in entries[:2]] == [
        ("reader", "job.update", "failed", "missing scope jobs:write"),
        ("jobs-writer", "workflow.create", "failed", "missing scope workflows:write"),
    ]


async def test_allowed_calls_are_audited_with_their_outcome(api: httpx.AsyncClient) -> None:
    ok = await api.post("/jobs", json=job_body("scan"), headers=bearer(JOBS_WRITER_TOKEN))
    assert ok.status_code == 201
    bad = await api.post(
        "/jobs", json=job_body("other", timeoutMs=1), headers=bearer(JOBS_WRITER_TOKEN)
    )
    assert bad.status_code == 400
    entries = (await _audit(api))["auditLogs"]
    assert [(e["subject"], e["outcome"], e["statusCode"]) for e in entries[:2]] == [
        ("jobs-writer", "failed", 400),
        ("jobs-writer", "succeeded", None),
    ]
    assert entries[0]["reason"].startswith("timeoutMs:")


async def test_reads_are_open_but_admin_needs_admin_read(api: httpx.AsyncClient) -> None:
    anonymous = {"Authorization": ""}
    assert (await api.get("/jobs", headers=anonymous)).status_code == 200
    assert (await api.get("/workflows", headers=anonymous)).status_code == 200
    assert (await api.get("/admin/audit-logs", headers=anonymous)).status_code == 401
    denied = await api.get("/admin/audit-logs", headers=bearer(JOBS_WRITER_TOKEN))
    assert denied.status_code == 403
    allowed = await api.get("/admin/audit-logs", headers=bearer(READER_TOKEN))
    assert allowed.status_code == 200


async def test_audit_log_pages_newest_first_with_a_cursor(api: httpx.AsyncClient) -> None:
    for index in range(5):
        await api.post("/jobs", json=job_body(f"job-{index}"))
    first = await _audit(api, limit=2)
    assert first["page"]["hasMore"] is True
    assert first["page"]["limit"] == 2
    seen = [entry["resource"] for entry in first["auditLogs"]]
    cursor = first["page"]["nextCursor"]
    while cursor:
        page = await _audit(api, limit=2, cursor=cursor)
        seen += [entry["resource"] for entry in page["auditLogs"]]
        cursor = page["page"]["nextCursor"]
    # five creates, plus one audit read per page fetched before it
    creates = [entry for entry in seen if entry == "/jobs"]
    assert len(creates) == 5
    ids = [entry["id"] for entry in (await _audit(api, limit=200))["auditLogs"]]
    assert ids == sorted(ids, reverse=True)


@pytest.mark.parametrize("cursor", ["garbage!", "eyJ2IjoyfQ", "eyJ2IjoxLCJpZCI6IngifQ"])
async def test_invalid_cursor_is_400(api: httpx.AsyncClient, cursor: str) -> None:
    response = await api.get("/admin/audit-logs", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["error"].startswith("cursor:")


async def test_first_start_creates_a_private_operator_token(
    database: Database, tmp_path: Path
) -> None:
    settings = Settings(database_url=str(database.engine.url), data_dir=tmp_path / "data")
    app = create_app(settings, database=database)
    async with app.router.lifespan_context(app):
        token_file = tmp_path / "data" / "operator-token"
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert token_file.stat().st_mode & 0o777 == 0o600
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/jobs", json=job_body("a"))).status_code == 401
            created = await client.post("/jobs", json=job_body("a"), headers=bearer(token))
            assert created.status_code == 201
    again = create_app(settings, database=database)
    async with again.router.lifespan_context(again):
        assert token_file.read_text().strip() == token


async def test_auth_disabled_lets_writes_through(database: Database, tmp_path: Path) -> None:
    settings = Settings(
        database_url=str(database.engine.url), data_dir=tmp_path, auth_disabled=True
    )
    app = create_app(settings, database=database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/jobs", json=job_body("a"))).status_code == 201
            entries = (await client.get("/admin/audit-logs")).json()["data"]["auditLogs"]
    assert entries[0]["subject"] == "auth-disabled"
    assert not (tmp_path / "operator-token").exists()
