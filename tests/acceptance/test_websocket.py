"""`/ws` against a real server: ack, ping/pong, live run frames, topic filters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.acceptance.conftest import Server
from tests.runs import FIXTURES


async def _frames_until(
    socket: ClientConnection, run_id: str, last: str, seconds: float = 20
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(seconds):
        while True:
            frame = json.loads(await socket.recv())
            frames.append(frame)
            data = frame.get("data") or {}
            if frame["type"] == last and data.get("id") == run_id:
                return frames


async def test_live_run_frames_with_topics(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as api:
        job = {"slug": "noop", "name": "noop", "entryPoint": f"{FIXTURES}:noop"}
        assert (await api.post("/jobs", json=job)).status_code == 201
        workflow = {
            "slug": "live",
            "name": "live",
            "steps": [
                {"id": "a", "jobSlug": "noop"},
                {"id": "b", "jobSlug": "noop", "dependsOn": ["a"]},
            ],
        }
        assert (await api.post("/workflows", json=workflow)).status_code == 201
        ws_url = server.url.replace("http://", "ws://") + "/ws"
        async with (
            connect(ws_url + "?topics=workflow.run.*") as runs_only,
            connect(ws_url) as everything,
        ):
            for socket in (runs_only, everything):
                ack = json.loads(await socket.recv())
                assert ack["type"] == "connection.ack"
                assert ack["data"]["now"].endswith("Z")
            await runs_only.send("ping")
            assert json.loads(await runs_only.recv()) == {"type": "pong"}
            run = (await api.post("/workflows/live/run", json={})).json()["data"]
            filtered = await _frames_until(runs_only, run["id"], "workflow.run.succeeded")
            unfiltered = await _frames_until(everything, run["id"], "workflow.run.succeeded")
            patched = await api.patch("/workflows/live", json={"description": "v2"})
            assert patched.status_code == 200
            workflow_id = patched.json()["data"]["id"]
            updated = await _frames_until(everything, workflow_id, "workflow.definition.updated")
    assert updated[-1]["data"]["version"] == 2
    assert [f["type"] for f in filtered] == [
        "workflow.run.pending",
        "workflow.run.running",
        "workflow.run.succeeded",
    ]
    final = filtered[-1]["data"]
    assert final["metrics"] == {"totalSteps": 2, "completedSteps": 2}
    assert final["context"]["steps"]["b"]["status"] == "succeeded"
    assert all(frame["emittedAt"].endswith("Z") for frame in filtered)
    job_frames = [f for f in unfiltered if f["type"].startswith("job.run.")]
    assert [f["type"] for f in job_frames] == [
        "job.run.running",
        "job.run.succeeded",
        "job.run.running",
        "job.run.succeeded",
    ]
    assert all(f["data"]["jobSlug"] == "noop" for f in job_frames)


async def test_asset_produced_frames(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as api:
        job = {"slug": "produce", "name": "produce", "entryPoint": f"{FIXTURES}:produce"}
        assert (await api.post("/jobs", json=job)).status_code == 201
        workflow = {
            "slug": "maker",
            "name": "maker",
            "steps": [
                {"id": "make", "jobSlug": "produce", "produces": [{"assetId": "made.thing"}]}
            ],
        }
        assert (await api.post("/workflows", json=workflow)).status_code == 201
        ws_url = server.url.replace("http://", "ws://") + "/ws?topics=asset.*"
        async with connect(ws_url) as socket:
            assert json.loads(await socket.recv())["type"] == "connection.ack"
            body = {"parameters": {"assets": [{"assetId": "made.thing", "payload": {"n": 1}}]}}
            run = (await api.post("/workflows/maker/run", json=body)).json()["data"]
            async with asyncio.timeout(20):
                frame = json.loads(await socket.recv())
    assert frame["type"] == "asset.produced"
    event = frame["data"]
    assert event["type"] == "asset.produced"
    payload = event["payload"]
    assert (payload["assetId"], payload["workflowSlug"], payload["workflowRunId"]) == (
        "made.thing",
        "maker",
        run["id"],
    )
    assert payload["stepId"] == "make"
    assert payload["producedAt"].endswith("Z")
    assert event["metadata"]["__apphubWorkflow"]["workflowRunId"] == run["id"]
