"""`apphub triggers …` and `apphub schedules …` against a running server, as a user types
them; and `apphub triggers` alone, the trigger worker process."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from apphub.domain.base import parse_iso
from tests.acceptance.conftest import Server, apphub_env, free_port, start_apphub
from tests.runs import FIXTURES

TRIGGER_YAML = """\
name: flag changed
eventType: metastore.record.updated
eventSource: metastore.api
predicates:
  - path: $.payload.namespace
    operator: equals
    value: feature-flags
parameterTemplate:
  key: "{{ event.payload.key }}"
runKeyTemplate: "flag-{{ event.payload.key }}"
"""
TRIGGER_JSON = {"name": "record deleted", "eventType": "metastore.record.deleted"}
CREATED = re.compile(r"trigger (\S+) created on sync \((\S+)\)")


def _api(server: Server, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {server.token}"}
    response = httpx.request(method, server.url + path, json=body, headers=headers, timeout=30)
    assert response.is_success, response.text
    return response.json()["data"]


def _setup(server: Server) -> None:
    job = {"slug": "emit", "name": "emit", "entryPoint": f"{FIXTURES}:emit"}
    _api(server, "POST", "/jobs", job)
    workflow = {"slug": "sync", "name": "sync", "steps": [{"id": "sync", "jobSlug": "emit"}]}
    _api(server, "POST", "/workflows", workflow)


def _created_id(result: subprocess.CompletedProcess[str], event_type: str) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    found = CREATED.search(result.stdout)
    assert found is not None, result.stdout
    assert found.group(2) == event_type
    return found.group(1)


def _launched(server: Server, trigger_id: str, event_id: str) -> dict[str, Any]:
    path = f"/workflows/sync/triggers/{trigger_id}/deliveries?eventId={event_id}"
    deadline = time.monotonic() + 20
    while True:
        rows = _api(server, "GET", path)
        if rows and rows[0]["status"] == "launched":
            delivery: dict[str, Any] = rows[0]
            return delivery
        assert time.monotonic() < deadline, f"no launched delivery: {rows}"
        time.sleep(0.1)


def _refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "(HTTP 400)" in result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_triggers_and_schedules_from_the_command_line(server: Server) -> None:
    _setup(server)
    (server.workdir / "trigger.yaml").write_text(TRIGGER_YAML)
    (server.workdir / "trigger.json").write_text(json.dumps(TRIGGER_JSON))
    flags = _created_id(
        server.cli("triggers", "create", "trigger.yaml", "-w", "sync"), "metastore.record.updated"
    )
    deleted = _created_id(
        server.cli("triggers", "create", "trigger.json", "--workflow", "sync"),
        "metastore.record.deleted",
    )
    stored = {row["id"]: row for row in _api(server, "GET", "/workflows/sync/triggers")}
    assert set(stored) == {flags, deleted}
    assert stored[flags]["predicates"][0]["value"] == "feature-flags"
    assert stored[flags]["parameterTemplate"] == {"key": "{{ event.payload.key }}"}

    listed = server.cli("triggers", "list", "-w", "sync")
    assert listed.returncode == 0, listed.stderr
    for expected in (flags, deleted, "flag changed", "record deleted", "metastore.api", "(any)"):
        assert expected in listed.stdout, listed.stdout

    payload = json.dumps({"namespace": "feature-flags", "key": "frontend-search"})
    published = server.cli(
        "events",
        "publish",
        "metastore.record.updated",
        "--source",
        "metastore.api",
        "--payload",
        payload,
        "--id",
        "evt-flag-1",
    )
    assert published.returncode == 0, published.stderr
    delivery = _launched(server, flags, "evt-flag-1")
    run = _api(server, "GET", f"/workflow-runs/{delivery['workflowRunId']}")
    assert run["parameters"] == {"key": "frontend-search"}
    assert run["runKey"] == "flag-frontend-search"
    assert _api(server, "GET", f"/workflows/sync/triggers/{deleted}/deliveries") == []

    shown = server.cli("triggers", "deliveries", flags, "-w", "sync", "--status", "launched")
    assert shown.returncode == 0, shown.stderr
    [row] = [line for line in shown.stdout.splitlines() if "evt-flag-1" in line]
    assert "launched" in row
    assert delivery["workflowRunId"] in row

    scheduled = server.cli(
        "schedules",
        "create",
        "sync",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Berlin",
        "--name",
        "nightly",
        "-p",
        "root=.",
        "--no-catch-up",
    )
    assert scheduled.returncode == 0, scheduled.stderr
    [schedule] = _api(server, "GET", "/workflows/sync/schedules")
    assert f"schedule {schedule['id']} created; next run {schedule['nextRunAt']}" in (
        scheduled.stdout
    )
    assert (schedule["cron"], schedule["timezone"], schedule["name"]) == (
        "0 2 * * *",
        "Europe/Berlin",
        "nightly",
    )
    assert (schedule["parameters"], schedule["catchUp"], schedule["isActive"]) == (
        {"root": "."},
        False,
        True,
    )
    local: datetime = parse_iso(schedule["nextRunAt"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (2, 0)

    schedules = server.cli("schedules", "list")
    assert schedules.returncode == 0, schedules.stderr
    [line] = [line for line in schedules.stdout.splitlines() if schedule["id"] in line]
    for expected in ("sync", "nightly", "0 2 * * *", "Europe/Berlin", "yes"):
        assert expected in line, line

    # Refused definitions: non-zero, the server's message naming the field; nothing saved.
    (server.workdir / "bad.yaml").write_text(TRIGGER_YAML.replace("metastore.record", "Meta"))
    _refused(server.cli("triggers", "create", "bad.yaml", "-w", "sync"), "eventType")
    assert len(_api(server, "GET", "/workflows/sync/triggers")) == 2
    bad_cron = server.cli("schedules", "create", "sync", "--cron", "0 25 * * *")
    _refused(bad_cron, "cron")
    assert [s["id"] for s in _api(server, "GET", "/workflow-schedules")] == [schedule["id"]]


def test_triggers_help_lists_its_commands(tmp_path: Path) -> None:
    env = apphub_env(tmp_path, free_port(), f"sqlite+aiosqlite:///{tmp_path}/unused.db")
    shown = subprocess.run(
        [sys.executable, "-m", "apphub", "triggers", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    for command in ("list", "create", "deliveries", "trigger worker"):
        assert command in shown.stdout, shown.stdout
    assert not (tmp_path / "unused.db").exists()  # help starts no worker


def test_triggers_alone_is_the_worker_process(tmp_path: Path) -> None:
    """On a SQLite file: it migrates, says it runs, and stops cleanly on SIGTERM."""
    database = tmp_path / "apphub.db"
    env = apphub_env(tmp_path, free_port(), f"sqlite+aiosqlite:///{database}")
    process = start_apphub(["triggers"], env, tmp_path, "triggers")
    try:
        deadline = time.monotonic() + 30
        while "apphub triggers running" not in process.log_path.read_text():
            assert process.popen.poll() is None, process.log_path.read_text()
            assert time.monotonic() < deadline, process.log_path.read_text()
            time.sleep(0.1)
        assert database.stat().st_size > 0
        assert process.popen.poll() is None  # it keeps running: a worker, not a command
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=15) == 0, process.log_path.read_text()
        assert "Traceback" not in process.log_path.read_text()
    finally:
        process.stop()
