"""Job runtimes: run one job invocation in-process, in a child Python, or as any command.

`run_job` is imported on first use: every `subprocess` job starts a Python that imports this
package, and it should not pay for asyncio and the runners it never uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from apphub.engine.runtimes.base import (
    LOGS_TAIL_LIMIT,
    FailureReason,
    JobInvocation,
    JobOutcome,
    TailBuffer,
)

if TYPE_CHECKING:
    from apphub.engine.runtimes.dispatch import run_job

__all__ = [
    "LOGS_TAIL_LIMIT",
    "FailureReason",
    "JobInvocation",
    "JobOutcome",
    "TailBuffer",
    "run_job",
]


def __getattr__(name: str) -> Any:
    if name == "run_job":
        from apphub.engine.runtimes.dispatch import run_job

        return run_job
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
