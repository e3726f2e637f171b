"""`apphub services …`: the registered HTTP services workflow steps call, and their health."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from apphub.cli.client import ApiClient
from apphub.cli.definitions import JsonOption, UpdateOption, register_document
from apphub.settings import Settings

services = typer.Typer(help="Registered HTTP services and their health.", no_args_is_help=True)
console = Console()

STATUS_STYLES = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "unknown": "dim"}


def _client() -> ApiClient:
    return ApiClient.from_env(Settings.from_env())


def _status(service: dict[str, object]) -> str:
    status = str(service["status"])
    return f"[{STATUS_STYLES.get(status, 'default')}]{status}[/]"


@services.command("list")
def list_services(as_json: JsonOption = False) -> None:
    """List registered services with the status of their last health check."""
    rows = _client().get("/services")
    if as_json:
        console.print_json(data=rows)
        return
    table = Table("slug", "base URL", "status", "latency", "last check", "message")
    for service in rows:
        latency = service["latencyMs"]
        table.add_row(
            service["slug"],
            service["baseUrl"] + service["healthPath"],
            _status(service),
            "" if latency is None else f"{latency} ms",
            service["lastCheckedAt"] or "never",
            service["statusMessage"] or "",
        )
    console.print(table)


@services.command("register")
def register_service(path: Path, update: UpdateOption = False) -> None:
    """Register a service from a JSON or YAML file (`slug`, `baseUrl`, `healthPath`, …)."""
    service = register_document("services", path, update)
    console.print(f"service [bold]{service['slug']}[/bold] registered at {service['baseUrl']}")


@services.command("check")
def check_service(slug: str) -> None:
    """Check a service's health now and print what the check saw."""
    service = _client().post(f"/services/{slug}/health-check", {})
    latency = service["latencyMs"]
    detail = f" ({service['statusMessage']})" if service["statusMessage"] else ""
    console.print(f"{service['slug']}: {_status(service)} in {latency} ms{detail}")
