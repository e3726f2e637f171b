"""`apphub triggers …`: list, create and inspect event triggers; alone, run the trigger worker.

`apphub schedules …`: list and create cron schedules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from apphub.cli.client import CliError, api_client
from apphub.cli.definitions import load_document
from apphub.cli.output import JsonOption, console, field, print_rows
from apphub.cli.processes import run_process
from apphub.cli.runs import ParamOption, parse_params

triggers = typer.Typer(
    help="Event triggers: list, create, deliveries; alone, run the trigger worker process.",
    invoke_without_command=True,
)
schedules = typer.Typer(help="Cron schedules: list and create.", no_args_is_help=True)
WorkflowOption = Annotated[str, typer.Option("--workflow", "-w", help="The workflow's slug.")]


@triggers.callback()
def trigger_worker(ctx: typer.Context) -> None:
    """Alone, run the trigger worker (scaled mode); SIGTERM or Ctrl-C stops it."""
    if ctx.invoked_subcommand is not None:
        return
    run_process("triggers", lambda services: services.trigger_worker().run())


@triggers.command("list")
def list_triggers(workflow: WorkflowOption, as_json: JsonOption = False) -> None:
    """List a workflow's event triggers."""
    columns = [
        ("id", field("id")),
        ("name", field("name")),
        ("event type", field("eventType")),
        ("source", field("eventSource", "(any)")),
        ("status", field("status")),
        ("version", field("version")),
        ("paused until", field("pausedUntil")),
    ]
    rows = api_client().get(f"/workflows/{quote(workflow)}/triggers")
    print_rows(rows, columns, as_json=as_json)


@triggers.command("create")
def create_trigger(
    file: Annotated[Path, typer.Argument(help="A trigger definition, JSON or YAML.")],
    workflow: WorkflowOption,
) -> None:
    """Create an event trigger on a workflow from a definition file."""
    document = load_document(file)
    if not isinstance(document, dict):
        raise CliError(f"{file} must hold one trigger definition (an object)")
    created = api_client().post(f"/workflows/{quote(workflow)}/triggers", document)
    console.print(f"trigger {created['id']} created on {workflow} ({created['eventType']})")


@triggers.command("deliveries")
def list_deliveries(
    trigger_id: Annotated[str, typer.Argument(help="The trigger's id.")],
    workflow: WorkflowOption,
    status: Annotated[str | None, typer.Option(help="Only deliveries in this status.")] = None,
    limit: Annotated[int, typer.Option(help="How many (1-200).")] = 50,
    as_json: JsonOption = False,
) -> None:
    """What a trigger did with the events it matched, newest first."""
    query = urlencode({k: v for k, v in {"status": status, "limit": limit}.items() if v})
    path = f"/workflows/{quote(workflow)}/triggers/{quote(trigger_id)}/deliveries?{query}"
    columns = [
        ("created", field("createdAt")),
        ("event", field("eventId")),
        ("status", field("status")),
        ("attempts", field("attempts")),
        ("run", field("workflowRunId")),
        ("next attempt", field("nextAttemptAt")),
        ("error", field("lastError")),
    ]
    print_rows(api_client().get(path), columns, as_json=as_json)


@schedules.command("list")
def list_schedules(
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    as_json: JsonOption = False,
) -> None:
    """List cron schedules (of one workflow, or all)."""
    path = f"/workflows/{quote(workflow)}/schedules" if workflow else "/workflow-schedules"
    columns = [
        ("id", field("id")),
        ("workflow", field("workflowSlug")),
        ("name", field("name")),
        ("cron", field("cron")),
        ("timezone", field("timezone")),
        ("active", field("isActive")),
        ("next run", field("nextRunAt")),
        ("error", field("lastError")),
    ]
    print_rows(api_client().get(path), columns, as_json=as_json)


@schedules.command("create")
def create_schedule(
    workflow: Annotated[str, typer.Argument(help="The workflow's slug.")],
    cron: Annotated[str, typer.Option(help="Cron expression, e.g. '0 2 * * *'.")],
    timezone: Annotated[str, typer.Option(help="IANA timezone of the cron.")] = "UTC",
    name: Annotated[str | None, typer.Option(help="A name for the schedule.")] = None,
    params: ParamOption = None,
    catch_up: Annotated[
        bool, typer.Option("--catch-up/--no-catch-up", help="Run missed occurrences.")
    ] = True,
    inactive: Annotated[bool, typer.Option("--inactive", help="Create it paused.")] = False,
) -> None:
    """Create a cron schedule for a workflow."""
    body: dict[str, Any] = {
        "cron": cron,
        "timezone": timezone,
        "parameters": parse_params(params),
        "catchUp": catch_up,
        "isActive": not inactive,
    }
    if name:
        body["name"] = name
    created = api_client().post(f"/workflows/{quote(workflow)}/schedules", body)
    console.print(f"schedule {created['id']} created; next run {created['nextRunAt']}")
