"""`apphub services …`: the registered HTTP services workflow steps call, and their health."""

from __future__ import annotations

from pathlib import Path

import typer

from apphub.cli.client import api_client
from apphub.cli.definitions import UpdateOption, register_document
from apphub.cli.output import JsonOption, Row, console, field, print_rows

services = typer.Typer(help="Registered HTTP services and their health.", no_args_is_help=True)

STATUS_STYLES = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "unknown": "dim"}


def _status(service: Row) -> str:
    status = str(service["status"])
    return f"[{STATUS_STYLES.get(status, 'default')}]{status}[/]"


def _latency(service: Row) -> str:
    latency = service["latencyMs"]
    return "" if latency is None else f"{latency} ms"


@services.command("list")
def list_services(as_json: JsonOption = False) -> None:
    """List registered services with the status of their last health check."""
    columns = [
        ("slug", field("slug")),
        ("base URL", lambda service: service["baseUrl"] + service["healthPath"]),
        ("status", _status),
        ("latency", _latency),
        ("last check", field("lastCheckedAt", "never")),
        ("message", field("statusMessage")),
    ]
    print_rows(api_client().get("/services"), columns, as_json=as_json)


@services.command("register")
def register_service(path: Path, update: UpdateOption = False) -> None:
    """Register a service from a JSON or YAML file (`slug`, `baseUrl`, `healthPath`, …)."""
    service = register_document("services", path, update)
    console.print(f"service [bold]{service['slug']}[/bold] registered at {service['baseUrl']}")


@services.command("check")
def check_service(slug: str) -> None:
    """Check a service's health now and print what the check saw."""
    service = api_client().post(f"/services/{slug}/health-check", {})
    latency = service["latencyMs"]
    detail = f" ({service['statusMessage']})" if service["statusMessage"] else ""
    console.print(f"{service['slug']}: {_status(service)} in {latency} ms{detail}")
