"""The `command` runtime: any executable, speaking the same stdin/stdout protocol."""

from __future__ import annotations

import shlex

from apphub.engine.runtimes.base import JobInvocation, JobOutcome
from apphub.engine.runtimes.process import run_process


async def run_command(invocation: JobInvocation) -> JobOutcome:
    """Split the command line like a shell would, but never run it through one."""
    try:
        argv = shlex.split(invocation.entry_point)
    except ValueError as error:
        return _unusable(f"invalid command line {invocation.entry_point!r}: {error}")
    if not argv:
        return _unusable("the command line is empty")
    return await run_process(argv, invocation)


def _unusable(message: str) -> JobOutcome:
    return JobOutcome(status="failed", error_message=message, failure_reason="import-error")
