"""Running a long-lived apphub process (worker, event ingress) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from apphub.logs import configure_logging
from apphub.settings import Settings

if TYPE_CHECKING:
    from apphub.engine.services import EngineServices


def run_process(loop: Callable[[EngineServices], Awaitable[None]]) -> None:
    """Open the services, migrate, run `loop`; SIGTERM and Ctrl-C stop it cleanly."""
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings, loop))


async def _serve(settings: Settings, loop: Callable[[EngineServices], Awaitable[None]]) -> None:
    from apphub.engine.services import EngineServices
    from apphub.store.migrate import migrate

    services = EngineServices.open(settings)
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        await migrate(services.database)
        await loop(services)
    except asyncio.CancelledError:
        pass  # the loop hands back what it held on its way out
    finally:
        await services.close()
