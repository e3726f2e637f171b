"""The `subprocess` runtime: call a `package.module:function` handler in a child Python.

Costs an interpreter start, buys isolation: a hung or crashing handler is killed with its
process group and never takes the worker with it.
"""

from __future__ import annotations

import sys

from apphub.engine.runtimes.base import JobInvocation, JobOutcome
from apphub.engine.runtimes.process import run_process

CHILD_MODULE = "apphub.engine.runtimes.child"


async def run_subprocess(invocation: JobInvocation) -> JobOutcome:
    """Run `python -m apphub.engine.runtimes.child ENTRY_POINT` with this interpreter."""
    argv = [sys.executable, "-m", CHILD_MODULE, invocation.entry_point]
    return await run_process(argv, invocation)
