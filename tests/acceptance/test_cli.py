"""The `apphub` command against a running server, as a user would type it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import Server, apphub_env, free_port

JOB_YAML = """\
slug: scan-directory
name: Scan a directory
runtime: python
entryPoint: examples.directory_insights:scan
timeoutMs: 60000
"""


def _workflow(slug: str, steps: list[dict[str, object]]) -> str:
    return json.dumps({"slug": slug, "name": slug.title(), "steps": steps})


def test_register_list_show_and_update(server: Server) -> None:
    (server.workdir / "job.yaml").write_text(JOB_YAML)
    registered = server.cli("jobs", "register", "job.yaml")
    assert registered.returncode == 0, registered.stderr
    assert "scan-directory" in registered.stdout
    assert "version 1" in registered.stdout

    listed = server.cli("jobs", "list")
    assert listed.returncode == 0
    assert "scan-directory" in listed.stdout
    assert "Scan a directory" in listed.stdout

    steps = [
        {"id": "scan", "jobSlug": "scan-directory"},
        {"id": "again", "jobSlug": "scan-directory", "dependsOn": ["scan"]},
    ]
    (server.workdir / "workflow.json").write_text(_workflow("insights", steps))
    workflow = server.cli("workflows", "register", "workflow.json")
    assert workflow.returncode == 0, workflow.stderr
    assert "scan -> again" in workflow.stdout

    shown = server.cli("workflows", "show", "insights")
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["workflow"]["dag"]["roots"] == ["scan"]

    duplicate = server.cli("workflows", "register", "workflow.json")
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr
    assert "409" in duplicate.stderr

    updated = server.cli("workflows", "register", "workflow.json", "--update")
    assert updated.returncode == 0, updated.stderr
    assert "version 2" in updated.stdout

    as_json = server.cli("workflows", "list", "--json")
    assert [entry["version"] for entry in json.loads(as_json.stdout)] == [2]


def test_refusals_exit_non_zero_with_the_server_message(server: Server) -> None:
    (server.workdir / "job.yaml").write_text(JOB_YAML)
    assert server.cli("jobs", "register", "job.yaml").returncode == 0
    cycle = [
        {"id": "a", "jobSlug": "scan-directory", "dependsOn": ["b"]},
        {"id": "b", "jobSlug": "scan-directory", "dependsOn": ["a"]},
    ]
    (server.workdir / "cycle.json").write_text(_workflow("loop", cycle))
    refused = server.cli("workflows", "register", "cycle.json")
    assert refused.returncode == 1
    assert "cycle" in refused.stderr
    assert "(HTTP 400)" in refused.stderr

    missing = server.cli("jobs", "show", "nope")
    assert missing.returncode == 1
    assert "job not found" in missing.stderr

    (server.workdir / "broken.json").write_text("{not json or yaml: [")
    unreadable = server.cli("jobs", "register", "broken.json")
    assert unreadable.returncode == 1
    assert "broken.json" in unreadable.stderr

    wrong_token = server.cli(
        "jobs", "register", "job.yaml", env={**server.env, "APPHUB_TOKEN": "wrong"}
    )
    assert wrong_token.returncode == 1
    assert "forbidden" in wrong_token.stderr


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    env = apphub_env(tmp_path, free_port(), f"sqlite+aiosqlite:///{tmp_path}/x.db")
    result = subprocess.run(
        [sys.executable, "-m", "apphub", "jobs", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot reach apphub" in result.stderr


def test_bad_setting_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    env = apphub_env(tmp_path, free_port(), f"sqlite+aiosqlite:///{tmp_path}/x.db")
    env["APPHUB_PORT"] = "not-a-port"
    result = subprocess.run(
        [sys.executable, "-m", "apphub", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "APPHUB_PORT" in result.stderr


def test_migrate_creates_an_embedded_database(tmp_path: Path) -> None:
    env = apphub_env(tmp_path, free_port(), "")
    del env["APPHUB_DATABASE_URL"]
    result = subprocess.run(
        [sys.executable, "-m", "apphub", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".apphub" / "apphub.db").stat().st_size > 0


def test_demo_runs_the_example_and_says_where_to_look(server_with_examples: Server) -> None:
    result = server_with_examples.cli("demo", "--root", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    report_line = next(line for line in result.stdout.splitlines() if line.startswith("report:"))
    report = Path(report_line.split(":", 1)[1].strip())
    assert report.is_file()
    assert "<table" in report.read_text()
    assert "/workflow-runs/" in result.stdout


def test_demo_without_the_examples_explains_what_to_do(server: Server) -> None:
    result = server.cli("demo")
    assert result.returncode == 1
    assert "make run" in result.stderr


def test_run_commands(server_with_examples: Server) -> None:
    run = server_with_examples.cli(
        "workflows", "run", "directory-insights-report", "-p", "root=.", "--wait"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "succeeded" in run.stdout
    listed = server_with_examples.cli("runs", "list", "--workflow", "directory-insights-report")
    assert "succeeded" in listed.stdout
    as_json = server_with_examples.cli(
        "runs", "list", "--workflow", "directory-insights-report", "--json"
    )
    [listed_run] = json.loads(as_json.stdout)
    assert (listed_run["workflowSlug"], listed_run["status"]) == (
        "directory-insights-report",
        "succeeded",
    )
    bad = server_with_examples.cli("workflows", "run", "directory-insights-report", "-p", "oops")
    assert bad.returncode == 1
    assert "KEY=VALUE" in bad.stderr
