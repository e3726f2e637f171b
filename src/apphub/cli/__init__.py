"""The `apphub` command: run the server and workers, and talk to a running server."""

from __future__ import annotations

import sys

from apphub.cli.app import app
from apphub.cli.client import CliError
from apphub.cli.output import err_console
from apphub.settings import SettingsError


def main() -> None:
    try:
        app()
    except (CliError, SettingsError) as error:
        err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)
