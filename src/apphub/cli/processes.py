"""Running a long-lived apphub process (worker, event ingress, materializer) until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import TYPE_CHECKING

from apphub.logs import configure_logging
from apphub.settings import Settings

if TYPE_CHECKING:
    from apphub.engine.services import EngineServices


def run_process(name: str, loop: Callable[[EngineServices], Awaitable[None]]) -> None:
    """Open the services, migrate, run `loop`; SIGTERM and Ctrl-C stop it cleanly.

    A SIGTERM that arrives while the process is still starting stops it cleanly too.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(name, settings, loop))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


async def _serve(
    name: str, settings: Settings, loop: Callable[[EngineServices], Awaitable[None]]
) -> None:
    from apphub.engine.services import EngineServices
    from apphub.store.migrate import migrate

    services = EngineServices.open(settings)
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        await migrate(services.database)
        print(f"apphub {name} running (SIGTERM or Ctrl-C stops it)", file=sys.stderr, flush=True)
        await loop(services)
    except asyncio.CancelledError:
        pass  # the loop hands back what it held on its way out
    finally:
        await services.close()
