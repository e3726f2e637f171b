"""Transports for fan-out: the Broadcaster seam, in-process or on Redis pub/sub.

RedisBroadcaster is not imported here so that embedded mode runs without redis installed.
"""

from __future__ import annotations

from apphub.bus.broadcast import (
    BUFFER_SIZE,
    Broadcaster,
    LocalBroadcaster,
    Message,
    Subscription,
)
from apphub.bus.factory import create_broadcaster

__all__ = [
    "BUFFER_SIZE",
    "Broadcaster",
    "LocalBroadcaster",
    "Message",
    "Subscription",
    "create_broadcaster",
]
