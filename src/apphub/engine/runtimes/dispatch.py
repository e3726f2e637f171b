"""One entry for the orchestrator: run an invocation in the runtime it names."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from apphub.engine.runtimes.base import JobInvocation, JobOutcome
from apphub.engine.runtimes.command import run_command
from apphub.engine.runtimes.python import run_python
from apphub.engine.runtimes.subprocess import run_subprocess

_RUNNERS: dict[str, Callable[[JobInvocation], Awaitable[JobOutcome]]] = {
    "python": run_python,
    "subprocess": run_subprocess,
    "command": run_command,
}


async def run_job(invocation: JobInvocation) -> JobOutcome:
    """Run one job invocation to its outcome; never raises for what the job did.

    Cancelling the awaiting task cancels the run: child process groups are killed (SIGTERM,
    SIGKILL after 2 s) before CancelledError propagates; an async python handler is
    cancelled; a sync python handler's thread cannot be stopped and is abandoned.
    """
    runner = _RUNNERS.get(invocation.runtime)
    if runner is None:
        return JobOutcome(
            status="failed",
            error_message=f"unknown runtime {invocation.runtime!r}",
            failure_reason="import-error",
        )
    return await runner(invocation)
