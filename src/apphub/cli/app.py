"""Top-level commands and the sub-command groups."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.console import Console

from apphub.cli import definitions
from apphub.settings import Settings

app = typer.Typer(
    help="apphub: jobs, DAG workflows and data assets, kept fresh by events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(definitions.jobs, name="jobs")
app.add_typer(definitions.workflows, name="workflows")
console = Console()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (APPHUB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (APPHUB_PORT).")] = None,
    no_workers: Annotated[
        bool, typer.Option("--no-workers", help="Serve the API only; run `apphub worker` apart.")
    ] = False,
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
    uvicorn.run(
        create_app(settings, workers=not no_workers),
        host=listen_host,
        port=listen_port,
        log_level=settings.log_level,
        access_log=False,
    )


@app.command()
def worker() -> None:
    """Run the orchestrator only: drive workflow runs and job runs from the queues."""
    from apphub.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings) -> None:
    from apphub.engine.services import EngineServices
    from apphub.engine.worker import Worker
    from apphub.store.migrate import migrate as run_migrations

    services = EngineServices.open(settings)
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        await run_migrations(services.database)
        await Worker(services).run()
    except asyncio.CancelledError:
        pass  # SIGTERM or Ctrl-C: the worker handed its runs back on the way out
    finally:
        await services.close()


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
