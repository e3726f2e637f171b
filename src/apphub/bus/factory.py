"""Choose the Broadcaster from REDIS_URL; the Redis one is imported only when asked for."""

from __future__ import annotations

from apphub.bus.broadcast import BUFFER_SIZE, Broadcaster, LocalBroadcaster
from apphub.settings import INLINE


def create_broadcaster(redis_url: str, *, buffer_size: int = BUFFER_SIZE) -> Broadcaster:
    """`inline` keeps fan-out in this process; any other URL fans out through Redis pub/sub."""
    if redis_url == INLINE:
        return LocalBroadcaster(buffer_size)
    try:
        from apphub.bus.redis_broadcast import RedisBroadcaster
    except ModuleNotFoundError as error:
        raise RuntimeError(
            f"REDIS_URL={redis_url!r} needs the 'redis' package ({error.name} is missing): "
            "pip install redis, or set REDIS_URL=inline"
        ) from error
    return RedisBroadcaster(redis_url, buffer_size=buffer_size)
