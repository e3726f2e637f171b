"""Events through a real server: a subprocess job publishing back, and /ws replay then live."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.acceptance.conftest import Server
from tests.runs import FIXTURES


async def _wait_run(api: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run: dict[str, Any] = (await api.get(f"/workflow-runs/{run_id}")).json()["data"]
        if run["status"] in ("succeeded", "failed", "canceled"):
            return run
        await asyncio.sleep(0.1)
    raise AssertionError("run did not end")


async def test_a_subprocess_job_publishes_with_its_workflow_context(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as api:
        job = {
            "slug": "announce",
            "name": "announce",
            "runtime": "subprocess",
            "entryPoint": f"{FIXTURES}:publish_from_job",
        }
        assert (await api.post("/jobs", json=job)).status_code == 201
        workflow = (
            await api.post(
                "/workflows",
                json={
                    "slug": "announcer",
                    "name": "announcer",
                    "steps": [{"id": "say", "jobSlug": "announce"}],
                },
            )
        ).json()["data"]
        run = (await api.post("/workflows/announcer/run", json={})).json()["data"]
        finished = await _wait_run(api, run["id"])
        assert finished["status"] == "succeeded", finished
        steps = (await api.get(f"/workflow-runs/{run['id']}/steps")).json()["data"]
        events = (await api.get("/admin/events", params={"type": "job.note"})).json()
    [published] = events["data"]["events"]
    [step] = steps
    assert published["id"] == step["output"]["eventId"]
    context = published["metadata"]["__apphubWorkflow"]
    assert context == {
        "workflowDefinitionId": workflow["id"],
        "workflowRunId": run["id"],
        "workflowRunStepId": step["id"],
        "jobRunId": step["jobRunId"],
        "jobSlug": "announce",
    }


async def test_replay_then_live_without_gap_or_duplicate(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    ws_url = server.url.replace("http://", "ws://") + "/ws"
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as api:

        async def publish(event_id: str) -> None:
            body = {"id": event_id, "type": "demo.tick", "source": "tests"}
            assert (await api.post("/events", json=body)).status_code == 202

        for n in range(5):
            await publish(f"before-{n}")
        during = [f"during-{n}" for n in range(20)]
        received: list[str] = []
        query = "?topics=workflow.event.received&after=before-1"
        async with connect(ws_url + query) as socket:
            assert json.loads(await socket.recv())["type"] == "connection.ack"
            publisher = asyncio.create_task(_publish_all(publish, during))
            expected = 3 + len(during)
            async with asyncio.timeout(30):
                while len(received) < expected:
                    frame = json.loads(await socket.recv())
                    received.append(frame["data"]["id"])
            await publisher
            await publish("after")
            async with asyncio.timeout(10):
                frame = json.loads(await socket.recv())
    assert frame["data"]["id"] == "after"
    assert received[:3] == ["before-2", "before-3", "before-4"]
    assert sorted(received[3:]) == sorted(during)
    assert len(received) == len(set(received)), "a frame came twice"


async def _publish_all(publish: Any, ids: list[str]) -> None:
    for event_id in ids:
        await publish(event_id)
