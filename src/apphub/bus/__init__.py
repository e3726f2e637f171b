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
from apphub.bus.publisher import EventPublisher, create_event_publisher, publish_event

__all__ = [
    "BUFFER_SIZE",
    "Broadcaster",
    "EventPublisher",
    "LocalBroadcaster",
    "Message",
    "Subscription",
    "create_broadcaster",
    "create_event_publisher",
    "publish_event",
]
