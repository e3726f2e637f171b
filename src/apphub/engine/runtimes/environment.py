"""The environment of a job's child process: the worker's, the job's, and apphub's own.

PYTHONPATH carries the worker's import roots so a child imports what the worker can.
"""

from __future__ import annotations

import functools
import json
import os
import site
import sys
import sysconfig
from pathlib import Path

from apphub.engine.runtimes.base import JobInvocation
from apphub.runtime import JOB_RUN_ID_ENV, WORKFLOW_EVENT_CONTEXT_ENV


def child_env(invocation: JobInvocation) -> dict[str, str]:
    """The worker's environment, the job's own variables, and what apphub tells the child."""
    env = {"PYTHONUNBUFFERED": "1", **os.environ, **(invocation.env or {})}
    env[JOB_RUN_ID_ENV] = invocation.run_id
    if invocation.workflow_event_context is None:
        env.pop(WORKFLOW_EVENT_CONTEXT_ENV, None)
    else:
        env[WORKFLOW_EVENT_CONTEXT_ENV] = json.dumps(
            invocation.workflow_event_context, separators=(",", ":")
        )
    env["PYTHONPATH"] = python_path(env.get("PYTHONPATH"))
    return env


def python_path(existing: str | None) -> str:
    """This directory, then `existing`, then the entries the worker added to its sys.path.

    The interpreter's own directories (stdlib, site-packages) are left out: a child of the
    same interpreter has them anyway, and another Python must not load this one's stdlib.
    """
    cwd = os.getcwd()
    entries = [cwd, *(existing.split(os.pathsep) if existing else [])]
    entries += [path for path in map(os.path.abspath, sys.path) if _is_project_path(path)]
    return os.pathsep.join(dict.fromkeys(entry for entry in entries if entry))


def _is_project_path(entry: str) -> bool:
    """An existing directory outside the interpreter's own (zip and hook entries drop out)."""
    path = Path(entry)
    if not path.is_dir():
        return False
    return not any(path.is_relative_to(root) for root in _interpreter_roots())


@functools.cache
def _interpreter_roots() -> tuple[Path, ...]:
    """The standard library and site-packages directories of this interpreter."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots |= {*site.getsitepackages(), site.getusersitepackages()}
    return tuple(Path(root) for root in roots)
