"""Helpers for tests that run workflows: register jobs, start runs, wait for them to end."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

ENDED = {"succeeded", "failed", "canceled", "expired"}
FIXTURES = "tests.fixtures.workflow_jobs"


async def register_job(
    api: httpx.AsyncClient, slug: str, handler: str, **fields: Any
) -> dict[str, Any]:
    body = {"slug": slug, "name": slug, "entryPoint": f"{FIXTURES}:{handler}", **fields}
    response = await api.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()["data"]
    return job


async def register_workflow(
    api: httpx.AsyncClient, slug: str, steps: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    response = await api.post(
        "/workflows", json={"slug": slug, "name": slug, "steps": steps, **fields}
    )
    assert response.status_code == 201, response.text
    workflow: dict[str, Any] = response.json()["data"]
    return workflow


async def start_run(api: httpx.AsyncClient, slug: str, **body: Any) -> dict[str, Any]:
    response = await api.post(f"/workflows/{slug}/run", json=body)
    assert response.status_code == 202, response.text
    run: dict[str, Any] = response.json()["data"]
    return run


async def wait_for(
    api: httpx.AsyncClient, path: str, done: Any, seconds: float = 20.0
) -> dict[str, Any]:
    """Poll `path` until `done(data)` holds; fail with the last answer when time runs out."""
    deadline = time.monotonic() + seconds
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = (await api.get(path)).json()["data"]
        if done(data):
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} did not reach the expected state in {seconds}s: {data}")


async def wait_for_run(
    api: httpx.AsyncClient, run_id: str, seconds: float = 20.0
) -> dict[str, Any]:
    return await wait_for(api, f"/workflow-runs/{run_id}", lambda r: r["status"] in ENDED, seconds)


async def steps_of(api: httpx.AsyncClient, run_id: str) -> dict[str, dict[str, Any]]:
    steps = (await api.get(f"/workflow-runs/{run_id}/steps")).json()["data"]
    return {step["stepId"]: step for step in steps}
