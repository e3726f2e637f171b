"""What every runtime takes and gives back, and the bounded buffers they capture output into.

A job may print gigabytes; the runtimes keep only what the run record stores (the end of its
output), so memory stays bounded whatever the job does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "LOGS_TAIL_LIMIT",
    "FailureReason",
    "JobInvocation",
    "JobOutcome",
    "OutcomeStatus",
    "Runtime",
    "TailBuffer",
    "elapsed_ms",
]

LOGS_TAIL_LIMIT = 64 * 1024
"""Characters of output kept per run: the end of it, where the failure usually is."""

Runtime = Literal["python", "subprocess", "command"]
OutcomeStatus = Literal["succeeded", "failed", "expired"]
FailureReason = Literal[
    "timeout", "exception", "exit-code", "import-error", "invalid-result", "result-status"
]
"""The failure reasons the runtimes produce; callers may record others (a plain str field)."""


@dataclass(frozen=True, slots=True)
class JobInvocation:
    """One run of one job: everything a runtime needs, nothing from the database."""

    runtime: Runtime
    entry_point: str
    """python/subprocess: "package.module:function"; command: a command line."""
    parameters: dict[str, Any]
    run_id: str
    timeout_s: float | None = None
    """None means no limit."""
    workflow_event_context: dict[str, Any] | None = None
    env: Mapping[str, str] | None = None
    """Extra environment variables for child processes (ignored by the python runtime)."""
    cwd: str | None = None
    """Working directory of child processes (ignored by the python runtime)."""


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a run ended; `result` is JSON-serialisable, `logs_tail` the end of its output."""

    status: OutcomeStatus
    result: Any = None
    error_message: str | None = None
    failure_reason: str | None = None
    """One of FailureReason when a runtime set it."""
    logs_tail: str = ""
    duration_ms: int = 0


def elapsed_ms(started: float) -> int:
    """Milliseconds since `started`, a `time.monotonic()` reading."""
    return int((time.monotonic() - started) * 1000)


class TailBuffer:
    """The last `limit` characters written to it, never holding much more than that.

    File-like enough (`write`, `flush`) to back a `logging.StreamHandler`; thread-safe because
    a sync handler's thread logs into it while the event loop may append a traceback.
    """

    def __init__(self, limit: int = LOGS_TAIL_LIMIT) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self._limit = limit
        self._chunks: deque[str] = deque()
        self._size = 0
        self._dropped = False
        self._lock = threading.Lock()

    @property
    def truncated(self) -> bool:
        """Whether earlier output was discarded."""
        with self._lock:
            return self._dropped or self._size > self._limit

    def write(self, text: str) -> int:
        """Append `text`, dropping whole chunks from the front once the rest covers the limit."""
        if not text:
            return 0
        with self._lock:
            if len(text) >= self._limit:
                self._dropped = self._dropped or self._size > 0 or len(text) > self._limit
                self._chunks.clear()
                self._chunks.append(text[-self._limit :])
                self._size = self._limit
                return len(text)
            self._chunks.append(text)
            self._size += len(text)
            while self._size - len(self._chunks[0]) >= self._limit:
                self._size -= len(self._chunks.popleft())
                self._dropped = True
            return len(text)

    def flush(self) -> None:
        """Nothing to flush; present for `logging.StreamHandler`."""

    def text(self) -> str:
        with self._lock:
            joined = "".join(self._chunks)
        return joined[-self._limit :]
