"""`apphub jobs …` and `apphub workflows …`: list, show and register definitions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from apphub.cli.client import ApiClient, CliError
from apphub.settings import Settings

jobs = typer.Typer(help="Job definitions.", no_args_is_help=True)
workflows = typer.Typer(help="Workflow definitions.", no_args_is_help=True)
console = Console()

UpdateOption = Annotated[
    bool, typer.Option("--update", "-u", help="Update the definition if the slug is taken.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _client() -> ApiClient:
    return ApiClient.from_env(Settings.from_env())


def load_document(path: Path) -> Any:
    """A definition file: JSON, or YAML (by extension, else whichever parses)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from None
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            return yaml.safe_load(text)
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            if path.suffix.lower() == ".json":
                raise
            return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise CliError(f"{path} is neither valid JSON nor YAML: {error}") from None


def register_document(kind: str, path: Path, update: bool) -> dict[str, Any]:
    document = load_document(path)
    if not isinstance(document, dict):
        raise CliError(f"{path} must hold one {kind[:-1]} definition (an object)")
    client = _client()
    try:
        created: dict[str, Any] = client.post(f"/{kind}", document)
        return created
    except CliError as error:
        if not update or "(HTTP 409)" not in str(error):
            raise
    changes = {key: value for key, value in document.items() if key not in {"slug", "version"}}
    updated: dict[str, Any] = client.patch(f"/{kind}/{document.get('slug')}", changes)
    return updated


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value))


@jobs.command("list")
def list_jobs(as_json: JsonOption = False) -> None:
    """List registered jobs."""
    rows = _client().get("/jobs")
    if as_json:
        _print_json(rows)
        return
    table = Table("slug", "name", "version", "type", "runtime", "entry point", "updated")
    for job in rows:
        table.add_row(
            job["slug"],
            job["name"],
            str(job["version"]),
            job["type"],
            job["runtime"],
            job["entryPoint"],
            job["updatedAt"],
        )
    console.print(table)


@jobs.command("show")
def show_job(slug: str) -> None:
    """Show one job definition and its recent runs."""
    _print_json(_client().get(f"/jobs/{slug}"))


@jobs.command("register")
def register_job(path: Path, update: UpdateOption = False) -> None:
    """Register a job from a JSON or YAML file."""
    job = register_document("jobs", path, update)
    console.print(f"job [bold]{job['slug']}[/bold] registered (version {job['version']})")


@workflows.command("list")
def list_workflows(as_json: JsonOption = False) -> None:
    """List registered workflows."""
    rows = _client().get("/workflows")
    if as_json:
        _print_json(rows)
        return
    table = Table("slug", "name", "version", "steps", "roots", "updated")
    for workflow in rows:
        table.add_row(
            workflow["slug"],
            workflow["name"],
            str(workflow["version"]),
            str(len(workflow["steps"])),
            ", ".join(workflow["dag"]["roots"]),
            workflow["updatedAt"],
        )
    console.print(table)


@workflows.command("show")
def show_workflow(slug: str) -> None:
    """Show one workflow definition (with its DAG) and its recent runs."""
    _print_json(_client().get(f"/workflows/{slug}"))


@workflows.command("register")
def register_workflow(path: Path, update: UpdateOption = False) -> None:
    """Register a workflow from a JSON or YAML file."""
    workflow = register_document("workflows", path, update)
    order = " -> ".join(workflow["dag"]["topologicalOrder"])
    console.print(
        f"workflow [bold]{workflow['slug']}[/bold] registered (version {workflow['version']}): "
        f"{order}"
    )
