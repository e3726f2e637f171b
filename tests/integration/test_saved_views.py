"""Saved views of the event log: ownership, sharing, filters checked on save, apply, analytics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from apphub.api.app import create_app
from apphub.settings import Settings
from apphub.store.database import Database
from tests.conftest import READER_TOKEN, bearer

VIEWS = "/events/saved-views"
ANONYMOUS = {"Authorization": ""}
READER = bearer(READER_TOKEN)
NO_FILTERS = {
    "type": None,
    "source": None,
    "correlationId": None,
    "severity": None,
    "from": None,
    "to": None,
    "jsonPath": None,
}


async def create(api: httpx.AsyncClient, name: str = "Failed jobs", **fields: Any) -> Any:
    headers = fields.pop("headers", None)
    body = {"name": name, "filters": {"source": "etl"}} | fields
    response = await api.post(VIEWS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def publish(api: httpx.AsyncClient, type: str, source: str, **payload: Any) -> None:
    body = {"type": type, "source": source, "payload": payload}
    response = await api.post("/events", json=body)
    assert response.status_code == 202, response.text


async def slugs(api: httpx.AsyncClient, headers: dict[str, str] | None = None) -> list[str]:
    response = await api.get(VIEWS, headers=headers)
    assert response.status_code == 200, response.text
    return [view["slug"] for view in response.json()["data"]]


async def test_owner_creates_reads_patches_and_deletes(api: httpx.AsyncClient) -> None:
    view = await create(
        api,
        description="ETL failures",
        filters={"type": "job.failed", "severity": "error", "from": "2026-01-02T03:04:05+02:00"},
    )
    assert view["slug"] == "failed-jobs"
    assert view["ownerSubject"] == "admin"
    assert view["filters"] == NO_FILTERS | {
        "type": "job.failed",
        "severity": "error",
        "from": "2026-01-02T01:04:05.000Z",
    }
    assert (view["shared"], view["applyCount"], view["lastAppliedAt"]) == (False, 0, None)
    assert view["createdAt"].endswith("Z")
    assert view["analytics"]["sampledCount"] == 0
    assert await slugs(api) == ["failed-jobs"]
    assert (await api.get(f"{VIEWS}/failed-jobs")).json()["data"]["description"] == "ETL failures"

    patched = await api.patch(
        f"{VIEWS}/failed-jobs", json={"name": "Renamed", "filters": {"source": "etl"}}
    )
    assert patched.status_code == 200, patched.text
    changed = patched.json()["data"]
    assert (changed["slug"], changed["name"]) == ("failed-jobs", "Renamed")
    assert changed["filters"] == NO_FILTERS | {"source": "etl"}
    assert changed["description"] == "ETL failures"
    for refused in ({"slug": "other"}, {"ownerSubject": "x"}, {"name": None}, {"name": ""}):
        assert (await api.patch(f"{VIEWS}/failed-jobs", json=refused)).status_code == 400

    assert (await api.delete(f"{VIEWS}/failed-jobs")).status_code == 204
    missing = await api.get(f"{VIEWS}/failed-jobs")
    assert missing.status_code == 404
    assert missing.json() == {"error": "saved view not found"}
    assert (await api.delete(f"{VIEWS}/failed-jobs")).status_code == 404
    schemas = (await api.get("/openapi.json")).json()["components"]["schemas"]
    assert "analytics" in schemas["SavedView"]["properties"]


async def test_slugs_are_derived_deduplicated_and_explicit_ones_conflict(
    api: httpx.AsyncClient,
) -> None:
    made = [(await create(api, "Failed jobs (prod)!"))["slug"] for _ in range(3)]
    assert made == ["failed-jobs-prod", "failed-jobs-prod-2", "failed-jobs-prod-3"]
    assert (await create(api, "!!!"))["slug"] == "view"
    assert (await create(api, "Mine", slug="my-view"))["slug"] == "my-view"
    taken = await api.post(VIEWS, json={"name": "x", "slug": "my-view", "filters": {}})
    assert taken.status_code == 409
    assert taken.json()["error"].startswith("slug:")
    bad = await api.post(VIEWS, json={"name": "x", "slug": "My_View", "filters": {}})
    assert bad.status_code == 400
    assert len(await slugs(api)) == 5


async def test_invalid_filters_are_400_and_store_nothing(api: httpx.AsyncClient) -> None:
    cases = [
        ({"severity": "fatal"}, "filters.severity"),
        ({"from": "yesterday"}, "filters.from"),
        ({"colour": "red"}, "filters.colour"),
        ({"jsonPath": "$.count >"}, "filters.jsonPath"),
    ]
    for filters, field in cases:
        response = await api.post(VIEWS, json={"name": "Bad", "filters": filters})
        assert response.status_code == 400, (filters, response.text)
        assert response.json()["error"].startswith(f"{field}:"), response.text
    assert (await api.post(VIEWS, json={"name": "x" * 201, "filters": {}})).status_code == 400
    assert await slugs(api) == []
    await create(api, "Kept")
    bad_patch = await api.patch(f"{VIEWS}/kept", json={"filters": {"jsonPath": "$.count >"}})
    assert bad_patch.status_code == 400
    assert (await api.get(f"{VIEWS}/kept")).json()["data"]["filters"]["source"] == "etl"


async def test_a_private_view_is_its_owners_only(api: httpx.AsyncClient) -> None:
    await create(api, "Private")
    denied = await api.get(f"{VIEWS}/private", headers=READER)
    assert (denied.status_code, denied.json()) == (403, {"error": "forbidden"})
    anonymous = await api.get(f"{VIEWS}/private", headers=ANONYMOUS)
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "authorization required"})
    assert (await api.get(f"{VIEWS}/private", headers=bearer("not-a-token"))).status_code == 403
    patch = await api.patch(f"{VIEWS}/private", json={"name": "Mine now"}, headers=READER)
    assert (patch.status_code, patch.json()) == (403, {"error": "forbidden"})
    assert (await api.post(f"{VIEWS}/private/apply", headers=READER)).status_code == 403
    assert (await api.delete(f"{VIEWS}/private", headers=READER)).status_code == 403
    assert (await api.post(f"{VIEWS}/private/share", headers=READER)).status_code == 403
    view = (await api.get(f"{VIEWS}/private")).json()["data"]
    assert (view["name"], view["shared"], view["applyCount"]) == ("Private", False, 0)

    await create(api, "Readers own", headers=READER)
    assert await slugs(api, READER) == ["readers-own"]
    assert await slugs(api) == ["private"]
    assert await slugs(api, ANONYMOUS) == []
    audit = (await api.get("/admin/audit-logs")).json()["data"]["auditLogs"]
    refusal = next(entry for entry in audit if entry["action"] == "saved-view.share")
    outcome = (refusal["subject"], refusal["outcome"], refusal["statusCode"], refusal["reason"])
    assert outcome == ("reader", "failed", 403, "forbidden")


async def test_a_shared_view_can_be_read_and_applied_by_others_but_not_changed(
    api: httpx.AsyncClient,
) -> None:
    await create(api, "Team view")
    await create(api, "Still private")
    shared = await api.post(f"{VIEWS}/team-view/share")
    assert shared.status_code == 200
    assert shared.json()["data"]["shared"] is True
    assert await slugs(api, ANONYMOUS) == ["team-view"]
    assert await slugs(api, READER) == ["team-view"]
    assert (await api.get(f"{VIEWS}/team-view", headers=ANONYMOUS)).status_code == 200
    applied = await api.post(f"{VIEWS}/team-view/apply", headers=READER)
    assert applied.status_code == 200, applied.text
    assert applied.json()["data"]["view"]["applyCount"] == 1
    patch = await api.patch(f"{VIEWS}/team-view", json={"name": "Taken"}, headers=READER)
    assert patch.status_code == 403
    assert (await api.delete(f"{VIEWS}/team-view", headers=READER)).status_code == 403
    assert (await api.get(f"{VIEWS}/team-view")).json()["data"]["name"] == "Team view"


async def test_apply_returns_matching_events_pages_and_counts_uses(
    api: httpx.AsyncClient,
) -> None:
    await publish(api, "etl.finished", "etl", rows=1)
    await publish(api, "etl.started", "etl", rows=2)
    await publish(api, "etl.finished", "etl", rows=3)
    await publish(api, "etl.finished", "billing", rows=4)
    await create(api, "ETL loads", filters={"source": "etl", "type": "etl.finished"})

    first = await api.post(f"{VIEWS}/etl-loads/apply", params={"limit": 1})
    assert first.status_code == 200, first.text
    data = first.json()["data"]
    assert data["view"]["applyCount"] == 1
    assert data["view"]["lastAppliedAt"].endswith("Z")
    assert data["page"]["hasMore"] is True
    assert data["page"]["limit"] == 1
    cursor = data["page"]["nextCursor"]
    second = (await api.post(f"{VIEWS}/etl-loads/apply", params={"cursor": cursor})).json()["data"]
    assert second["view"]["applyCount"] == 2
    assert second["page"] == {"nextCursor": None, "hasMore": False, "limit": 100}
    rows = [event["payload"]["rows"] for event in data["events"] + second["events"]]
    assert sorted(rows) == [1, 3]

    bad = await api.post(f"{VIEWS}/etl-loads/apply", params={"cursor": "garbage!"})
    assert bad.status_code == 400
    assert (await api.get(f"{VIEWS}/etl-loads")).json()["data"]["applyCount"] == 2
    assert (await api.post(f"{VIEWS}/nope/apply")).status_code == 404


async def test_analytics_cover_the_last_15_minutes_of_the_views_scope(
    api: httpx.AsyncClient,
) -> None:
    await publish(api, "etl.started", "analytics")
    await publish(api, "etl.finished", "analytics")
    await publish(api, "job.failed", "analytics")
    await publish(api, "job.failed", "elsewhere")
    old = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    stale = {"type": "job.failed", "source": "analytics", "occurredAt": old}
    assert (await api.post("/events", json=stale)).status_code == 202
    # from/to exclude every event from `apply`, but analytics ignore the view's time range
    window = {"source": "analytics", "from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}
    view = await create(api, "Analytics", filters=window)
    assert view["analytics"] == {
        "windowMinutes": 15,
        "eventsPerMinute": 0.2,
        "errorRatio": 0.333,
        "sampledCount": 3,
        "sampleLimit": 1000,
        "sampleLimitHit": False,
    }
    applied = (await api.post(f"{VIEWS}/analytics/apply")).json()["data"]
    assert applied["events"] == []
    assert applied["view"]["analytics"]["sampledCount"] == 3


async def test_with_auth_disabled_every_caller_is_one_owner(
    database: Database, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=str(database.engine.url), data_dir=tmp_path, auth_disabled=True
    )
    app = create_app(settings, database=database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            view = await create(client, "Open")
            assert view["ownerSubject"] == "auth-disabled"
            assert (await client.get(f"{VIEWS}/open")).status_code == 200
            assert (await client.patch(f"{VIEWS}/open", json={"name": "x"})).status_code == 200


async def test_a_json_path_filter_applies_and_scopes_the_analytics(api: httpx.AsyncClient) -> None:
    """Last on purpose: it needs the SQL jsonPath support on both backends."""
    await publish(api, "etl.finished", "etl", region="eu", rows=1)
    await publish(api, "etl.failed", "etl", region="eu", rows=2)
    await publish(api, "etl.finished", "etl", region="us", rows=3)
    view = await create(api, "EU", filters={"source": "etl", "jsonPath": '$.region == "eu"'})
    assert view["filters"]["jsonPath"] == '$.region == "eu"'
    assert (view["analytics"]["sampledCount"], view["analytics"]["errorRatio"]) == (2, 0.5)
    applied = await api.post(f"{VIEWS}/eu/apply")
    assert applied.status_code == 200, applied.text
    assert sorted(event["payload"]["rows"] for event in applied.json()["data"]["events"]) == [1, 2]
