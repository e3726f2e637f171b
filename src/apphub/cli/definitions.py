"""`apphub jobs …` and `apphub workflows …`: list, show and register definitions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from apphub.cli.client import CliError, api_client
from apphub.cli.output import JsonOption, console, field, print_json, print_rows

jobs = typer.Typer(help="Job definitions.", no_args_is_help=True)
workflows = typer.Typer(help="Workflow definitions.", no_args_is_help=True)
UpdateOption = Annotated[
    bool, typer.Option("--update", "-u", help="Update the definition if the slug is taken.")
]


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
    client = api_client()
    try:
        created: dict[str, Any] = client.post(f"/{kind}", document)
        return created
    except CliError as error:
        if not update or "(HTTP 409)" not in str(error):
            raise
    changes = {key: value for key, value in document.items() if key not in {"slug", "version"}}
    updated: dict[str, Any] = client.patch(f"/{kind}/{document.get('slug')}", changes)
    return updated


@jobs.command("list")
def list_jobs(as_json: JsonOption = False) -> None:
    """List registered jobs."""
    columns = [
        ("slug", field("slug")),
        ("name", field("name")),
        ("version", field("version")),
        ("type", field("type")),
        ("runtime", field("runtime")),
        ("entry point", field("entryPoint")),
        ("updated", field("updatedAt")),
    ]
    print_rows(api_client().get("/jobs"), columns, as_json=as_json)


@jobs.command("show")
def show_job(slug: str) -> None:
    """Show one job definition and its recent runs."""
    print_json(api_client().get(f"/jobs/{slug}"))


@jobs.command("register")
def register_job(path: Path, update: UpdateOption = False) -> None:
    """Register a job from a JSON or YAML file."""
    job = register_document("jobs", path, update)
    console.print(f"job [bold]{job['slug']}[/bold] registered (version {job['version']})")


@workflows.command("list")
def list_workflows(as_json: JsonOption = False) -> None:
    """List registered workflows."""
    columns = [
        ("slug", field("slug")),
        ("name", field("name")),
        ("version", field("version")),
        ("steps", lambda workflow: str(len(workflow["steps"]))),
        ("roots", lambda workflow: ", ".join(workflow["dag"]["roots"])),
        ("updated", field("updatedAt")),
    ]
    print_rows(api_client().get("/workflows"), columns, as_json=as_json)


@workflows.command("show")
def show_workflow(slug: str) -> None:
    """Show one workflow definition (with its DAG) and its recent runs."""
    print_json(api_client().get(f"/workflows/{slug}"))


@workflows.command("register")
def register_workflow(path: Path, update: UpdateOption = False) -> None:
    """Register a workflow from a JSON or YAML file."""
    workflow = register_document("workflows", path, update)
    order = " -> ".join(workflow["dag"]["topologicalOrder"])
    console.print(
        f"workflow [bold]{workflow['slug']}[/bold] registered (version {workflow['version']}): "
        f"{order}"
    )
