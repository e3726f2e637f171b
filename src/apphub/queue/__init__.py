"""JobQueue: wake-up calls carrying ids, in-process (LocalQueue) or on Redis (SaqQueue).

SaqQueue is not imported here so that embedded mode runs without saq installed.
"""

from __future__ import annotations

from apphub.queue.base import Handler, JobQueue, QueueCounts, QueueMode
from apphub.queue.factory import create_queue
from apphub.queue.local import LocalQueue

__all__ = ["Handler", "JobQueue", "LocalQueue", "QueueCounts", "QueueMode", "create_queue"]
