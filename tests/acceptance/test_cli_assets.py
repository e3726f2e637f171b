"""`apphub assets …` against a real server that has produced the example report asset."""

from __future__ import annotations

import json
import time

from tests.acceptance.conftest import Server

REPORT = "directory.insights.report"
ARCHIVE = "directory.insights.archive"


def test_list_history_and_graph_after_a_report_run(server_with_examples: Server) -> None:
    server = server_with_examples
    ran = server.cli("workflows", "run", "directory-insights-report", "-p", "root=.", "--wait")
    assert ran.returncode == 0, ran.stdout + ran.stderr

    one_workflow = server.cli("assets", "list", "--workflow", "directory-insights-report")
    assert one_workflow.returncode == 0, one_workflow.stderr
    assert REPORT in one_workflow.stdout
    assert "yes" in one_workflow.stdout

    everywhere = server.cli("assets", "list")
    assert everywhere.returncode == 0, everywhere.stderr
    assert REPORT in everywhere.stdout
    assert ARCHIVE in everywhere.stdout

    history = server.cli("assets", "history", "directory-insights-report", REPORT, "--json")
    assert history.returncode == 0, history.stderr
    entries = json.loads(history.stdout)
    assert len(entries) == 1
    assert entries[0]["stepId"] == "render"
    assert entries[0]["payload"]["reportPath"].endswith(".html")

    graph = server.cli("assets", "graph")
    assert graph.returncode == 0, graph.stderr
    assert "workflow directory-insights-report" in graph.stdout
    assert f"asset {REPORT}" in graph.stdout
    assert "→ directory-insights-archive/archive" in graph.stdout

    unknown = server.cli("assets", "history", "directory-insights-report", "nope")
    assert unknown.returncode == 1
    assert "asset not found for workflow" in unknown.stderr

    no_rows = server.cli("assets", "history", "directory-insights-report", REPORT, "--limit", "0")
    assert no_rows.returncode != 0
    assert "400" in no_rows.stderr


def test_why_explains_the_archive_that_ran_by_itself(server_with_examples: Server) -> None:
    """The example archive auto-materializes on a new report; `why` says so, and why not."""
    server = server_with_examples
    ran = server.cli("workflows", "run", "directory-insights-report", "-p", "root=.", "--wait")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    deadline = time.monotonic() + 20
    while True:
        why = server.cli("assets", "why", ARCHIVE, "--json")
        assert why.returncode == 0, why.stderr
        answer = json.loads(why.stdout)
        if answer["decisions"]:
            break
        assert time.monotonic() < deadline, "the archive was never decided about"
        time.sleep(0.2)
    [decision] = answer["decisions"]
    assert (decision["outcome"], decision["reason"]) == ("launched", "upstream-update")
    assert decision["workflowSlug"] == "directory-insights-archive"
    assert answer["producers"][0]["onUpstreamUpdate"] is True

    table = server.cli("assets", "why", ARCHIVE)
    assert table.returncode == 0, table.stderr
    assert "produced by directory-insights-archive: on upstream update" in table.stdout
    assert "newest decision: launched (upstream-update)" in table.stdout
    assert decision["runId"] in table.stdout

    report = server.cli("assets", "why", REPORT)
    assert report.returncode == 0, report.stderr
    assert "next cadence expiry at" in report.stdout
    assert "no decisions yet" in report.stdout

    unknown = server.cli("assets", "why", "no.such.asset")
    assert unknown.returncode == 1
    assert "asset not found" in unknown.stderr
