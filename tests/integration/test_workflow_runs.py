"""Running workflows over HTTP with the embedded worker, on every backend."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from apphub.store import workflow_runs
from apphub.store.database import Database
from tests.runs import (
    register_job,
    register_workflow,
    start_run,
    steps_of,
    wait_for,
    wait_for_run,
)


def _at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_parallel_branches_join_and_read_shared(api: httpx.AsyncClient) -> None:
    await register_job(api, "emit", "emit")
    steps = [
        {"id": "a", "jobSlug": "emit", "parameters": {"x": 42}, "storeResultAs": "x"},
        {"id": "b", "jobSlug": "emit", "dependsOn": ["a"], "parameters": {"sleep": 0.3}},
        {"id": "c", "jobSlug": "emit", "dependsOn": ["a"], "parameters": {"sleep": 0.3}},
        {
            "id": "d",
            "jobSlug": "emit",
            "dependsOn": ["b", "c"],
            "parameters": {
                "fromShared": "{{ shared.x.parameters.x }}",
                "label": "x={{ shared.x.parameters.x }}",
            },
        },
    ]
    await register_workflow(api, "join", steps)
    run = await start_run(api, "join", parameters={"who": "test"})
    assert run["status"] == "pending"
    finished = await wait_for_run(api, run["id"])
    assert finished["status"] == "succeeded", finished
    results = finished["context"]["steps"]
    b, c = results["b"]["result"], results["c"]["result"]
    assert b["started"] < c["ended"], "b and c did not overlap"
    assert c["started"] < b["ended"], "b and c did not overlap"
    d = results["d"]["result"]["parameters"]
    assert d["fromShared"] == 42
    assert d["label"] == "x=42"
    assert d["who"] == "test"
    assert finished["metrics"] == {"totalSteps": 4, "completedSteps": 4}
    assert finished["durationMs"] is not None
    assert finished["durationMs"] >= 300
    assert finished["output"]["x"]["parameters"]["x"] == 42


async def test_fanout_doubles_each_item(api: httpx.AsyncClient) -> None:
    await register_job(api, "seed", "seed")
    await register_job(api, "double", "double")
    steps = [
        {"id": "seed", "jobSlug": "seed", "parameters": {"items": [1, 2, 3]}},
        {
            "id": "each",
            "type": "fanout",
            "dependsOn": ["seed"],
            "collection": "{{ steps.seed.result.items }}",
            "template": {"id": "twice", "jobSlug": "double", "parameters": {"value": "{{ item }}"}},
            "maxConcurrency": 2,
            "storeResultsAs": "doubled",
        },
    ]
    await register_workflow(api, "fan", steps)
    finished = await wait_for_run(api, (await start_run(api, "fan"))["id"])
    assert finished["status"] == "succeeded", finished
    doubled = finished["context"]["shared"]["doubled"]
    assert [entry["output"]["value"] for entry in doubled] == [2, 4, 6]
    assert [entry["item"] for entry in doubled] == [1, 2, 3]
    assert [entry["stepId"] for entry in doubled] == [
        "each:twice:1",
        "each:twice:2",
        "each:twice:3",
    ]
    assert finished["metrics"]["totalSteps"] == 5
    children = {k: v for k, v in (await steps_of(api, finished["id"])).items() if ":" in k}
    assert {child["fanoutIndex"] for child in children.values()} == {0, 1, 2}
    assert all(child["parentStepId"] == "each" for child in children.values())
    assert all(child["templateStepId"] == "twice" for child in children.values())


async def test_fanout_over_its_limit_fails(api: httpx.AsyncClient) -> None:
    await register_job(api, "seed", "seed")
    await register_job(api, "double", "double")
    steps = [
        {"id": "seed", "jobSlug": "seed", "parameters": {"items": list(range(5))}},
        {
            "id": "each",
            "type": "fanout",
            "dependsOn": ["seed"],
            "maxItems": 3,
            "collection": "{{ steps.seed.result.items }}",
            "template": {"id": "t", "jobSlug": "double", "parameters": {"value": "{{ item }}"}},
        },
    ]
    await register_workflow(api, "too-many", steps)
    finished = await wait_for_run(api, (await start_run(api, "too-many"))["id"])
    assert finished["status"] == "failed"
    step = (await steps_of(api, finished["id"]))["each"]
    assert "exceeds the limit" in step["errorMessage"]


async def test_failed_step_fails_the_run_and_skips_dependents(api: httpx.AsyncClient) -> None:
    await register_job(api, "fail", "fail")
    await register_job(api, "noop", "noop")
    steps = [
        {"id": "bad", "jobSlug": "fail", "parameters": {"message": "disk full"}},
        {"id": "after", "jobSlug": "noop", "dependsOn": ["bad"]},
        {"id": "independent", "jobSlug": "noop"},
    ]
    await register_workflow(api, "broken", steps)
    finished = await wait_for_run(api, (await start_run(api, "broken"))["id"])
    assert finished["status"] == "failed"
    assert "bad" in finished["errorMessage"]
    assert "disk full" in finished["errorMessage"]
    steps_now = await steps_of(api, finished["id"])
    assert steps_now["bad"]["status"] == "failed"
    assert steps_now["bad"]["failureReason"] == "exception"
    assert steps_now["after"]["status"] == "skipped"
    assert steps_now["independent"]["status"] == "succeeded"
    job_run = (await api.get(f"/job-runs/{steps_now['bad']['jobRunId']}")).json()["data"]
    assert job_run["status"] == "failed"
    assert "disk full" in job_run["errorMessage"]


@pytest.mark.parametrize("delay_ms", [300, 1500])
async def test_retry_succeeds_on_the_second_attempt_after_the_delay(
    api: httpx.AsyncClient, tmp_path: Path, delay_ms: int
) -> None:
    """300 ms is slept by the driver; 1500 ms releases the run and wakes it from the queue."""
    await register_job(api, "flaky", "flaky")
    marker = tmp_path / "calls"
    steps = [
        {
            "id": "try",
            "jobSlug": "flaky",
            "parameters": {"marker": str(marker)},
            "retryPolicy": {"maxAttempts": 2, "strategy": "fixed", "initialDelayMs": delay_ms},
        }
    ]
    await register_workflow(api, "retry", steps)
    finished = await wait_for_run(api, (await start_run(api, "retry"))["id"])
    assert finished["status"] == "succeeded", finished
    step = (await steps_of(api, finished["id"]))["try"]
    assert step["attempt"] == 2
    assert marker.read_text() == "2"
    job_runs = (await api.get("/jobs/flaky/runs")).json()["data"]
    first, second = sorted(job_runs, key=lambda run: run["attempt"])
    assert (first["status"], second["status"]) == ("failed", "succeeded")
    gap_ms = (_at(second["startedAt"]) - _at(first["completedAt"])) * 1000
    assert gap_ms >= delay_ms - 5


async def test_no_policy_means_no_retry(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await register_job(api, "flaky", "flaky")
    steps = [{"id": "once", "jobSlug": "flaky", "parameters": {"marker": str(tmp_path / "m")}}]
    await register_workflow(api, "once", steps)
    finished = await wait_for_run(api, (await start_run(api, "once"))["id"])
    assert finished["status"] == "failed"
    assert (tmp_path / "m").read_text() == "1"


async def test_timeout_fails_the_step(api: httpx.AsyncClient) -> None:
    await register_job(api, "sleepy", "sleepy")
    steps = [{"id": "slow", "jobSlug": "sleepy", "parameters": {"seconds": 10}, "timeoutMs": 1000}]
    await register_workflow(api, "slow", steps)
    started = time.monotonic()
    finished = await wait_for_run(api, (await start_run(api, "slow"))["id"])
    assert time.monotonic() - started < 5
    step = (await steps_of(api, finished["id"]))["slow"]
    assert (finished["status"], step["status"], step["failureReason"]) == (
        "failed",
        "failed",
        "timeout",
    )
    job_run = (await api.get(f"/job-runs/{step['jobRunId']}")).json()["data"]
    assert job_run["status"] == "expired"


async def test_cancel_kills_a_running_subprocess(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await register_job(api, "hold", "record_and_sleep", runtime="subprocess")
    await register_job(api, "noop", "noop")
    pid_file = tmp_path / "pid"
    steps = [
        {"id": "hold", "jobSlug": "hold", "parameters": {"pidFile": str(pid_file)}},
        {"id": "next", "jobSlug": "noop", "dependsOn": ["hold"]},
    ]
    await register_workflow(api, "hold", steps)
    run = await start_run(api, "hold")
    deadline = time.monotonic() + 15
    while not pid_file.exists() and time.monotonic() < deadline:
        await _pause()
    pid = int(pid_file.read_text())
    response = await api.post(f"/workflow-runs/{run['id']}/cancel")
    assert response.status_code == 202
    finished = await wait_for_run(api, run["id"])
    assert finished["status"] == "canceled"
    steps_now = await steps_of(api, run["id"])
    assert steps_now["hold"]["status"] == "canceled"
    assert steps_now["next"]["status"] == "canceled"
    assert not _alive(pid), "the child process survived the cancel"
    again = await api.post(f"/workflow-runs/{run['id']}/cancel")
    assert again.status_code == 409


async def test_run_key_conflicts_while_active(api: httpx.AsyncClient) -> None:
    await register_job(api, "sleepy", "sleepy")
    await register_workflow(
        api, "keyed", [{"id": "s", "jobSlug": "sleepy", "parameters": {"seconds": 0.5}}]
    )
    first = await start_run(api, "keyed", runKey="nightly-2026.11.23")
    clash = await api.post("/workflows/keyed/run", json={"runKey": "NIGHTLY-2026.11.23"})
    assert clash.status_code == 409
    assert clash.json()["error"] == "run key already pending or running"
    assert clash.json()["data"]["id"] == first["id"]
    bad_key = await api.post("/workflows/keyed/run", json={"runKey": "has space"})
    assert bad_key.status_code == 400
    assert bad_key.json()["detail"]["errors"][0]["field"] == "runKey"
    await wait_for_run(api, first["id"])
    later = await start_run(api, "keyed", runKey="nightly-2026.11.23")
    assert later["id"] != first["id"]
    await wait_for_run(api, later["id"])


async def test_parameters_failing_the_schema_create_no_run(api: httpx.AsyncClient) -> None:
    await register_job(api, "noop", "noop")
    schema = {
        "type": "object",
        "required": ["root"],
        "properties": {"root": {"type": "string"}, "depth": {"type": "integer"}},
    }
    await register_workflow(api, "typed", [{"id": "a", "jobSlug": "noop"}], parametersSchema=schema)
    missing = await api.post("/workflows/typed/run", json={"parameters": {"depth": 1}})
    assert missing.status_code == 400
    assert missing.json()["reason"] == "invalid_parameters"
    assert "root" in missing.json()["error"]
    wrong = await api.post(
        "/workflows/typed/run", json={"parameters": {"root": ".", "depth": "deep"}}
    )
    assert wrong.status_code == 400
    assert wrong.json()["detail"]["errors"][0]["field"] == "parameters.depth"
    assert (await api.get("/workflow-runs")).json()["data"] == []
    assert (await api.get("/workflows/typed/runs")).json()["data"] == []


@pytest.mark.parametrize("runtime", ["python", "subprocess"])
async def test_workflow_event_context_reaches_the_job(api: httpx.AsyncClient, runtime: str) -> None:
    await register_job(api, "probe", "context_probe", runtime=runtime)
    workflow = await register_workflow(api, "probe", [{"id": "look", "jobSlug": "probe"}])
    run = await start_run(api, "probe", runKey="probe-1")
    finished = await wait_for_run(api, run["id"])
    assert finished["status"] == "succeeded", finished
    step = (await steps_of(api, run["id"]))["look"]
    expected = {
        "workflowDefinitionId": workflow["id"],
        "workflowRunId": run["id"],
        "workflowRunStepId": step["id"],
        "jobRunId": step["jobRunId"],
        "jobSlug": "probe",
        "workflowRunKey": "probe-1",
    }
    assert step["output"]["context"] == expected
    assert step["output"]["ctx"] == expected


async def test_standalone_job_run(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await register_job(
        api, "double", "double", parametersSchema={"type": "object", "required": ["value"]}
    )
    response = await api.post("/jobs/double/run", json={"parameters": {"value": 21}})
    assert response.status_code == 202
    job_run = response.json()["data"]
    assert job_run["status"] == "pending"
    done = await wait_for(
        api, f"/job-runs/{job_run['id']}", lambda r: r["status"] not in ("pending", "running")
    )
    assert (done["status"], done["result"]) == ("succeeded", {"value": 42})
    assert done["durationMs"] is not None
    invalid = await api.post("/jobs/double/run", json={"parameters": {}})
    assert invalid.status_code == 400
    assert len((await api.get("/job-runs")).json()["data"]) == 1
    assert (await api.get("/job-runs?status=succeeded")).json()["data"][0]["id"] == job_run["id"]
    assert (await api.get("/job-runs/nope")).status_code == 404


async def test_standalone_job_run_retries(api: httpx.AsyncClient, tmp_path: Path) -> None:
    policy = {"maxAttempts": 3, "strategy": "fixed", "initialDelayMs": 100}
    await register_job(api, "flaky", "flaky", retryPolicy=policy)
    body = {"parameters": {"marker": str(tmp_path / "m"), "succeedOn": 3}}
    job_run = (await api.post("/jobs/flaky/run", json=body)).json()["data"]
    assert job_run["maxAttempts"] == 3
    done = await wait_for(
        api, f"/job-runs/{job_run['id']}", lambda r: r["status"] not in ("pending", "running")
    )
    assert (done["status"], done["attempt"], done["result"]) == ("succeeded", 3, {"calls": 3})


async def test_run_listing_and_steps(api: httpx.AsyncClient) -> None:
    await register_job(api, "noop", "noop")
    await register_workflow(
        api,
        "two",
        [{"id": "a", "jobSlug": "noop"}, {"id": "b", "jobSlug": "noop", "dependsOn": ["a"]}],
    )
    run = await start_run(api, "two")
    await wait_for_run(api, run["id"])
    listed = (await api.get("/workflow-runs?workflow=two&status=succeeded")).json()["data"]
    assert [entry["id"] for entry in listed] == [run["id"]]
    assert (await api.get("/workflow-runs?workflow=ghost")).json()["data"] == []
    assert (await api.get("/workflow-runs?status=bogus")).status_code == 400
    steps_now = await steps_of(api, run["id"])
    assert list(steps_now) == ["a", "b"]
    assert [steps_now[s]["status"] for s in ("a", "b")] == ["succeeded", "succeeded"]
    assert all(step["attempt"] == 1 and step["jobRunId"] for step in steps_now.values())
    detail = (await api.get("/workflows/two")).json()["data"]
    assert [entry["id"] for entry in detail["runs"]] == [run["id"]]
    assert (await api.get("/workflow-runs/nope")).status_code == 404
    assert (await api.get("/workflow-runs/nope/steps")).status_code == 404


async def test_running_needs_the_run_scope(api: httpx.AsyncClient) -> None:
    from tests.conftest import JOBS_WRITER_TOKEN, bearer

    await register_job(api, "noop", "noop")
    await register_workflow(api, "guarded", [{"id": "a", "jobSlug": "noop"}])
    refused = await api.post("/workflows/guarded/run", headers=bearer(JOBS_WRITER_TOKEN))
    assert refused.status_code == 403
    assert (await api.get("/workflow-runs")).json()["data"] == []
    assert (await api.post("/workflows/ghost/run")).status_code == 404


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


async def test_a_run_released_to_wait_is_only_woken_when_due(
    api: httpx.AsyncClient, database: Database, tmp_path: Path
) -> None:
    """The reconciler leaves a run waiting for a long retry alone until the retry is due."""
    await register_job(api, "flaky", "flaky")
    policy = {"maxAttempts": 2, "strategy": "fixed", "initialDelayMs": 60_000}
    steps = [
        {
            "id": "try",
            "jobSlug": "flaky",
            "parameters": {"marker": str(tmp_path / "m")},
            "retryPolicy": policy,
        }
    ]
    await register_workflow(api, "later", steps)
    run = await start_run(api, "later")
    step = await wait_for(
        api, f"/workflow-runs/{run['id']}/steps", lambda s: s and s[0]["retryState"] == "scheduled"
    )
    due = datetime.fromisoformat(step[0]["nextAttemptAt"].replace("Z", "+00:00"))
    await wait_for(api, f"/workflow-runs/{run['id']}", lambda r: r["status"] == "running")
    long_ago = due - timedelta(days=1)

    async def to_wake(now: datetime) -> list[str]:
        async with database.read() as connection:  # one short transaction per look
            return await workflow_runs.workflow_runs_to_wake(connection, now, long_ago, 10)

    deadline = time.monotonic() + 5
    while await to_wake(due - timedelta(seconds=30)):
        assert time.monotonic() < deadline, "the waiting run was never released"
        await _pause()
    assert await to_wake(due + timedelta(seconds=1)) == [run["id"]]
