"""The one place that picks a JobQueue implementation from the configured Redis URL."""

from __future__ import annotations

from apphub.queue.base import JobQueue
from apphub.queue.local import LocalQueue
from apphub.settings import INLINE


def create_queue(name: str, redis_url: str) -> JobQueue:
    """`inline` keeps the queue in this process; any other URL shares it through Redis (saq)."""
    if redis_url == INLINE:
        return LocalQueue(name)
    try:
        from apphub.queue.saq import SaqQueue
    except ModuleNotFoundError as error:
        raise RuntimeError(
            f"REDIS_URL={redis_url!r} needs the 'saq[redis]' package ({error.name} is missing): "
            "pip install 'saq[redis]', or set REDIS_URL=inline"
        ) from error
    return SaqQueue(name, redis_url)
