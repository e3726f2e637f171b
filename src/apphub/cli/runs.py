"""`apphub runs …`, `apphub workflows run`, `apphub jobs run`, and `apphub demo`."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from apphub.cli.client import ApiClient, CliError, api_client
from apphub.cli.output import JsonOption, Row, console, field, print_json, print_rows

runs = typer.Typer(help="Workflow runs.", no_args_is_help=True)
ENDED = {"succeeded", "failed", "canceled", "expired"}
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "running": "yellow",
    "canceled": "magenta",
    "skipped": "dim",
    "pending": "cyan",
    "expired": "red",
}

ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="KEY=VALUE (VALUE parsed as JSON when it parses)."),
]
WaitOption = Annotated[bool, typer.Option("--wait", "-w", help="Follow the run until it ends.")]


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for pair in pairs or []:
        key, separator, raw = pair.partition("=")
        if not separator or not key:
            raise CliError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            parameters[key] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[key] = raw
    return parameters


def run_workflow(
    slug: str,
    params: ParamOption = None,
    wait: WaitOption = False,
    run_key: Annotated[str | None, typer.Option("--run-key")] = None,
) -> None:
    """Start a run of a workflow (and follow it with --wait)."""
    body: dict[str, Any] = {"parameters": parse_params(params)}
    if run_key:
        body["runKey"] = run_key
    client = api_client()
    run = client.post(f"/workflows/{slug}/run", body)
    console.print(f"run [bold]{run['id']}[/bold] of {slug} is {run['status']}")
    if wait:
        final = follow(client, run["id"])
        if final["status"] != "succeeded":
            raise typer.Exit(1)


def run_job(slug: str, params: ParamOption = None) -> None:
    """Start a run of a job."""
    job_run = api_client().post(f"/jobs/{slug}/run", {"parameters": parse_params(params)})
    console.print(f"job run [bold]{job_run['id']}[/bold] of {slug} is {job_run['status']}")


def follow(client: ApiClient, run_id: str, poll_s: float = 0.2) -> dict[str, Any]:
    """Show the run's steps live until it ends; returns the final run."""
    run = client.get(f"/workflow-runs/{run_id}")
    with Live(_steps_table(run, []), console=console, refresh_per_second=8) as live:
        while True:
            run = client.get(f"/workflow-runs/{run_id}")
            steps = client.get(f"/workflow-runs/{run_id}/steps")
            live.update(_steps_table(run, steps))
            if run["status"] in ENDED:
                return run  # type: ignore[no-any-return]
            time.sleep(poll_s)


def _steps_table(run: dict[str, Any], steps: list[dict[str, Any]]) -> Table:
    title = f"run {run['id'][:8]} of {run['workflowSlug']}: {_styled_status(run)}"
    table = Table("step", "status", "attempt", "error", title=title, title_justify="left")
    for step in steps:
        table.add_row(
            step["stepId"],
            _styled_status(step),
            str(step["attempt"]),
            (step.get("errorMessage") or "")[:80],
        )
    return table


@runs.command("list")
def list_runs(
    workflow: Annotated[str | None, typer.Option(help="Only this workflow's runs.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first).")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent workflow runs."""
    query: dict[str, Any] = {"limit": limit}
    if workflow:
        query["workflow"] = workflow
    if status:
        query["status"] = status
    print_rows(api_client().get("/workflow-runs", params=query), RUN_COLUMNS, as_json=as_json)


def _styled_status(row: Row) -> str:
    status = row["status"]
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


def _steps_done(run: Row) -> str:
    return f"{run['metrics']['completedSteps']}/{run['metrics']['totalSteps']}"


def _duration(run: Row) -> str:
    return "" if run["durationMs"] is None else f"{run['durationMs']} ms"


RUN_COLUMNS = [
    ("id", field("id")),
    ("workflow", field("workflowSlug")),
    ("status", _styled_status),
    ("steps", _steps_done),
    ("triggered by", field("triggeredBy")),
    ("created", field("createdAt")),
    ("duration", _duration),
]


@runs.command("show")
def show_run(run_id: str) -> None:
    """Show one run (parameters, context, output) as JSON."""
    print_json(api_client().get(f"/workflow-runs/{run_id}"))


@runs.command("steps")
def show_steps(run_id: str) -> None:
    """Show the steps of one run."""
    client = api_client()
    console.print(
        _steps_table(
            client.get(f"/workflow-runs/{run_id}"), client.get(f"/workflow-runs/{run_id}/steps")
        )
    )


@runs.command("watch")
def watch_run(run_id: str) -> None:
    """Follow a run live until it ends."""
    follow(api_client(), run_id)


@runs.command("cancel")
def cancel_run(run_id: str) -> None:
    """Cancel a run: pending steps are canceled, running ones stopped."""
    run = api_client().post(f"/workflow-runs/{run_id}/cancel", {})
    console.print(f"cancel requested for run [bold]{run['id']}[/bold] ({run['status']})")


DEMO_WORKFLOW = "directory-insights-report"


def demo(root: Annotated[str, typer.Option(help="The directory to scan.")] = ".") -> None:
    """Run the directory-insights-report example once, live, and say where to look."""
    client = api_client()
    try:
        client.get(f"/workflows/{DEMO_WORKFLOW}")
    except CliError as error:
        raise CliError(
            f"{error}\nthe example workflows are not registered here: start the server with "
            "`make run` (it serves with --defs examples.directory_insights)"
        ) from None
    run = client.post(f"/workflows/{DEMO_WORKFLOW}/run", {"parameters": {"root": root}})
    final = follow(client, run["id"])
    if final["status"] != "succeeded":
        raise CliError(f"the demo run {final['status']}: {final.get('errorMessage')}")
    render = final["context"]["steps"]["render"]["result"]
    totals = render["totals"]
    console.print(f"\nscanned {totals['files']} files ({totals['bytes']:,} bytes) under {root}")
    console.print(f"report:  [bold]{render['reportPath']}[/bold]")
    console.print(
        f"the run: {client.base_url}/workflow-runs/{final['id']} (and its steps: …/steps)"
    )
    console.print("next:    apphub runs list · apphub workflows show directory-insights-report")
