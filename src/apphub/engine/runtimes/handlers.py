"""Loading a `package.module:function` handler and turning what it returned into an outcome.

Shared by the in-process runtime and the child process, so both read a handler's return
value the same way.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from apphub.engine.runtimes.base import JobOutcome
from apphub.runtime import JobContext, JobResult

Handler = Callable[[JobContext], Any]


class EntryPointError(Exception):
    """The entry point is malformed, its module does not import, or it names nothing callable."""


def load_handler(entry_point: str) -> Handler:
    """Import `module:attr` (attr may be dotted); every failure becomes an EntryPointError."""
    module_name, _, attr_path = entry_point.partition(":")
    if not module_name.strip() or not attr_path.strip():
        raise EntryPointError(
            f"entry point {entry_point!r} must look like 'package.module:function'"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr_path.split("."):
            target = getattr(target, part)
    except (Exception, SystemExit) as error:
        raise EntryPointError(
            f"cannot load entry point {entry_point!r}: {exception_message(error)}"
        ) from error
    if not callable(target):
        raise EntryPointError(f"entry point {entry_point!r} is not callable")
    handler: Handler = target
    return handler


def exception_message(error: BaseException) -> str:
    """`str(error)`, or the class name when that is empty (`raise RuntimeError()`)."""
    return str(error) or type(error).__name__


def json_value(value: Any) -> Any:
    """`value` as it will read back from the database; TypeError/ValueError if it is not JSON."""
    return json.loads(json.dumps(value, allow_nan=False))


def settle(value: Any) -> JobOutcome:
    """A handler's return value as an outcome.

    A JobResult says how it went; any other value is the result itself.
    """
    if isinstance(value, JobResult):
        if value.status not in ("succeeded", "failed"):
            return _invalid(
                f"JobResult.status must be 'succeeded' or 'failed', not {value.status!r}"
            )
        payload, status, error_message = value.result, value.status, value.error_message
    else:
        payload, status, error_message = value, "succeeded", None
    try:
        result = json_value(payload)
    except (TypeError, ValueError) as error:
        return _invalid(f"result is not JSON-serialisable: {error}")
    if status == "failed":
        return JobOutcome(
            status="failed",
            result=result,
            error_message=error_message or "job returned status 'failed'",
            failure_reason="result-status",
        )
    return JobOutcome(status="succeeded", result=result)


def _invalid(message: str) -> JobOutcome:
    return JobOutcome(status="failed", error_message=message, failure_reason="invalid-result")
