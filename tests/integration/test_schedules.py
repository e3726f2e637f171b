"""Cron schedules on every backend, over HTTP, with the embedded scheduler.

Missed occurrences are made by a `startWindow` in the past (those occurrences were owed
before the schedule was saved), so catch-up is judged in well under a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from croniter import croniter
from sqlalchemy import select

from apphub.domain.base import iso_ms
from apphub.store.database import Database
from apphub.store.tables import durable_timers
from tests.conftest import open_hub
from tests.runs import register_job, register_workflow, wait_for

SLUG = "nightly"


@pytest.fixture
async def hub(database: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with open_hub(database, tmp_path) as opened:
        await register_job(opened.client, "emit", "emit")
        yield opened.client


async def workflow(api: httpx.AsyncClient, **fields: Any) -> None:
    await register_workflow(api, SLUG, [{"id": "run", "jobSlug": "emit"}], **fields)


async def schedule(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await api.post(f"/workflows/{SLUG}/schedules", json=fields)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["data"]
    return created


def occurrences_between(cron: str, start: datetime, end: datetime) -> list[str]:
    found, it = [], croniter(cron, start - timedelta(microseconds=1))
    while (moment := it.get_next(datetime)) <= end:
        found.append(iso_ms(moment))
    return found


async def scheduled_runs(api: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = await wait_for(
        api, f"/workflows/{SLUG}/runs?limit=50", lambda runs: len(runs) >= count
    )
    return runs


def past_window() -> tuple[datetime, datetime]:
    """Six minutes of occurrences, all over: nothing near a minute boundary is judged."""
    start = (datetime.now(UTC) - timedelta(minutes=10)).replace(second=0, microsecond=0)
    return start, start + timedelta(minutes=5)


async def test_catch_up_runs_every_missed_occurrence_once(hub: httpx.AsyncClient) -> None:
    await workflow(hub, defaultParameters={"mode": "full"})
    start, end = past_window()
    created = await schedule(
        hub,
        name="every minute",
        cron="* * * * *",
        startWindow=iso_ms(start),
        endWindow=iso_ms(end),
        parameters={"x": 1},
    )
    expected = occurrences_between("* * * * *", start, end)
    assert len(expected) == 6
    runs = await scheduled_runs(hub, len(expected))
    assert sorted(run["trigger"]["occurrence"] for run in runs) == expected
    for run in runs:
        assert run["triggeredBy"] == "schedule"
        assert run["trigger"]["type"] == "schedule"
        assert run["trigger"]["scheduleId"] == created["id"]
        assert run["parameters"] == {"mode": "full", "x": 1}
        assert run["runKey"].startswith(f"schedule:{created['id']}:")
    assert len({run["runKey"] for run in runs}) == len(runs)
    shown = await wait_for(
        hub, f"/workflow-schedules/{created['id']}", lambda s: s["lastRunId"] is not None
    )
    assert shown["nextRunAt"] is None  # the window is over: nothing more is owed
    assert shown["lastRunId"] in {run["id"] for run in runs}


async def test_without_catch_up_only_the_latest_missed_occurrence_runs(
    hub: httpx.AsyncClient,
) -> None:
    await workflow(hub)
    start, end = past_window()
    created = await schedule(
        hub, cron="* * * * *", startWindow=iso_ms(start), endWindow=iso_ms(end), catchUp=False
    )
    runs = await scheduled_runs(hub, 1)
    assert [run["trigger"]["occurrence"] for run in runs] == [iso_ms(end)]
    shown = await wait_for(
        hub, f"/workflow-schedules/{created['id']}", lambda s: s["lastRunId"] is not None
    )
    assert shown["nextRunAt"] is None
    assert len((await hub.get(f"/workflows/{SLUG}/runs")).json()["data"]) == 1


async def test_an_inactive_schedule_is_never_due(
    hub: httpx.AsyncClient, database: Database
) -> None:
    await workflow(hub)
    start = datetime.now(UTC) - timedelta(hours=1)
    created = await schedule(hub, cron="* * * * *", startWindow=iso_ms(start), isActive=False)
    assert created["nextRunAt"] is None
    async with database.read() as connection:
        timers = list(await connection.execute(select(durable_timers.c.key)))
    assert created["id"] not in [row.key for row in timers]
    await asyncio.sleep(0.3)  # sixty owed occurrences would have been run in milliseconds
    assert (await hub.get(f"/workflows/{SLUG}/runs")).json()["data"] == []
    turned_on = datetime.now(UTC)
    active = await hub.patch(f"/workflow-schedules/{created['id']}", json={"isActive": True})
    assert active.status_code == 200, active.text
    assert active.json()["data"]["nextRunAt"] > iso_ms(turned_on)
    await asyncio.sleep(0.3)
    # Turned on: owed from then on; the hour it was off is not caught up.
    runs = (await hub.get(f"/workflows/{SLUG}/runs")).json()["data"]
    assert all(run["trigger"]["occurrence"] > iso_ms(turned_on) for run in runs)
    off = await hub.patch(f"/workflow-schedules/{created['id']}", json={"isActive": False})
    assert off.json()["data"]["nextRunAt"] is None
    assert (await hub.delete(f"/workflow-schedules/{created['id']}")).status_code == 204
    assert (await hub.get(f"/workflow-schedules/{created['id']}")).status_code == 404
    assert (await hub.delete(f"/workflow-schedules/{created['id']}")).status_code == 404


async def test_a_time_window_partitioned_workflow_runs_for_each_occurrence_window(
    hub: httpx.AsyncClient,
) -> None:
    await register_job(hub, "produce", "produce")
    daily = {"type": "timeWindow", "granularity": "day"}
    steps = [
        {"id": "make", "jobSlug": "produce", "produces": [{"assetId": "d", "partitioning": daily}]}
    ]
    await register_workflow(hub, SLUG, steps)
    start = (datetime.now(UTC) - timedelta(days=3)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    await schedule(hub, cron="0 0 * * *", startWindow=iso_ms(start))
    expected = occurrences_between("0 0 * * *", start, datetime.now(UTC))
    runs = await scheduled_runs(hub, len(expected))
    by_occurrence = {run["trigger"]["occurrence"]: run["partitionKey"] for run in runs}
    assert by_occurrence == {moment: moment[:10] for moment in expected}


BAD_SCHEDULES = [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "every night"}, "cron"),
    ({"cron": "0 0 30 2 *"}, "cron"),
    ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "timezone"),
    (
        {
            "cron": "0 2 * * *",
            "startWindow": "2030-01-02T00:00:00Z",
            "endWindow": "2030-01-01T00:00:00Z",
        },
        "body",
    ),
    ({"cron": "0 2 * * *", "catchUp": "sometimes"}, "catchUp"),
    ({"cron": "0 2 * * *", "every": "day"}, "every"),
]


@pytest.mark.parametrize(("body", "field"), BAD_SCHEDULES)
async def test_bad_schedules_are_refused_and_change_nothing(
    hub: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    await workflow(hub)
    response = await hub.post(f"/workflows/{SLUG}/schedules", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]["errors"][0]["field"] == field
    assert (await hub.get("/workflow-schedules")).json()["data"] == []


async def test_schedules_the_workflow_cannot_take_are_refused(hub: httpx.AsyncClient) -> None:
    static = {"type": "static", "keys": ["eu", "us"]}
    await register_job(hub, "produce", "produce")
    steps = [
        {"id": "make", "jobSlug": "produce", "produces": [{"assetId": "s", "partitioning": static}]}
    ]
    await register_workflow(hub, "regional", steps)
    refused = await hub.post("/workflows/regional/schedules", json={"cron": "0 2 * * *"})
    assert refused.status_code == 400
    assert refused.json()["reason"] == "not_schedulable"
    await workflow(hub, parametersSchema={"type": "object", "required": ["day"]})
    missing = await hub.post(f"/workflows/{SLUG}/schedules", json={"cron": "0 2 * * *"})
    assert missing.status_code == 400
    assert missing.json()["reason"] == "invalid_parameters"
    assert (
        await hub.post("/workflows/nope/schedules", json={"cron": "0 2 * * *"})
    ).status_code == 404
    assert (await hub.get("/workflow-schedules")).json()["data"] == []
