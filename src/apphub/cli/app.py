"""Top-level commands and the sub-command groups."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from apphub.cli import assets, definitions, events, runs, triggers
from apphub.cli.client import CliError
from apphub.cli.output import console
from apphub.cli.processes import run_process
from apphub.cli.services import services
from apphub.sdk import Definitions
from apphub.settings import Settings

app = typer.Typer(
    help="apphub: jobs, DAG workflows and data assets, kept fresh by events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(definitions.jobs, name="jobs")
app.add_typer(definitions.workflows, name="workflows")
app.add_typer(runs.runs, name="runs")
app.add_typer(assets.assets, name="assets")
app.add_typer(events.events, name="events")
app.add_typer(services, name="services")
app.add_typer(triggers.triggers, name="triggers")
app.add_typer(triggers.schedules, name="schedules")
definitions.workflows.command("run")(runs.run_workflow)
definitions.jobs.command("run")(runs.run_job)
app.command()(runs.demo)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (APPHUB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (APPHUB_PORT).")] = None,
    no_workers: Annotated[
        bool, typer.Option("--no-workers", help="Serve the API only; run `apphub worker` apart.")
    ] = False,
    defs: Annotated[
        list[str] | None,
        typer.Option(
            "--defs",
            help="A module or .py file of @apphub.job / apphub.workflow "
            "definitions to register on start (repeatable).",
        ),
    ] = None,
) -> None:
    """Run the API server, with the workers in the same process unless --no-workers."""
    import uvicorn

    from apphub.api.app import create_app
    from apphub.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    listen_host, listen_port = host or settings.host, port or settings.port
    if not settings.auth_disabled and settings.operator_tokens is None:
        console.print(f"operator token: {settings.token_file} (the CLI reads it from there)")
    console.print(f"apphub listening on http://{listen_host}:{listen_port}  (docs: /docs)")
    definitions = _load_definitions(defs or [])
    uvicorn.run(
        create_app(
            settings,
            workers=not no_workers,
            definitions=definitions,
            public_url=f"http://{_reachable(listen_host)}:{listen_port}",
        ),
        host=listen_host,
        port=listen_port,
        log_level=settings.log_level,
        access_log=False,
    )


def _reachable(host: str) -> str:
    """A listen-on-everything address is reached through loopback by local children."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _load_definitions(targets: list[str]) -> Definitions | None:
    if not targets:
        return None
    from apphub.sdk import load_definitions

    merged = Definitions()
    for target in targets:
        try:
            found = load_definitions(target)
        except (ImportError, ValueError) as error:
            raise CliError(f"cannot load definitions from {target}: {error}") from None
        for job in found.jobs:
            merged.add_job(job)
        merged.workflows += found.workflows
        console.print(
            f"definitions from {target}: {len(found.jobs)} jobs, {len(found.workflows)} workflows"
        )
    return merged


@app.command()
def worker() -> None:
    """Run the orchestrator only: drive workflow runs and job runs from the queues."""
    from apphub.engine.worker import Worker

    run_process("worker", lambda services: Worker(services).run())


@app.command()
def materializer() -> None:
    """Run the asset materializer only (scaled mode): auto-materialize on events and timers."""
    run_process("materializer", lambda services: services.materializer().run())


@app.command("services-health")
def services_health() -> None:
    """Run the service health poller only (scaled mode); one acts per cluster."""
    run_process("services-health", lambda engine: engine.health_poller().run())


@app.command()
def scheduler() -> None:
    """Run the scheduler only (scaled mode): cron schedules make runs; one acts per cluster."""
    run_process("scheduler", lambda services: services.scheduler().run())


@app.command()
def migrate() -> None:
    """Bring the database (APPHUB_DATABASE_URL) to the newest schema."""
    from apphub.store.database import open_database
    from apphub.store.migrate import migrate as run_migrations

    settings = Settings.from_env()

    async def _run() -> None:
        database = open_database(settings.database_url)
        try:
            await run_migrations(database)
        finally:
            await database.dispose()

    asyncio.run(_run())
    console.print(f"database is at the newest schema ({settings.database_url.split(':')[0]})")
