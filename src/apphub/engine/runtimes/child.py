"""The child side of the `subprocess` runtime: `python -m apphub.engine.runtimes.child ENTRY`.

Reads the parameters (JSON) from stdin, calls the handler, and prints the outcome as the
last stdout line: `{"status": …, "result": …, "errorMessage": …}`. An exception or an
unloadable handler prints to stderr and exits 1, which the parent reports as a failed run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Awaitable
from typing import Any, TextIO, cast

from apphub.engine.runtimes.handlers import EntryPointError, Handler, load_handler, settle
from apphub.runtime import JOB_RUN_ID_ENV, JobContext, get_workflow_event_context

_LOG_FORMAT = "%(levelname)s %(message)s"


class _LineTrackingStdout:
    """Wraps sys.stdout to know whether the handler left an unterminated line behind."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.at_line_start = True

    def write(self, text: str) -> int:
        if text:
            self.at_line_start = text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    """Run the handler named by the single argument; the return value is the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m apphub.engine.runtimes.child package.module:function", file=sys.stderr
        )
        return 2
    try:
        parameters = _read_parameters(sys.stdin)
        handler = load_handler(args[0])
    except (ValueError, EntryPointError) as error:
        print(error, file=sys.stderr)
        return 1
    real_stdout = sys.stdout
    stdout = _LineTrackingStdout(real_stdout)
    sys.stdout = cast(TextIO, stdout)
    try:
        value = _call(handler, _context(parameters))
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout = real_stdout
    return _emit(value, line_start=stdout.at_line_start)


def _read_parameters(stream: TextIO) -> dict[str, Any]:
    """The JSON object on stdin; no input at all means no parameters."""
    raw = stream.read()
    parameters = json.loads(raw) if raw.strip() else {}
    if not isinstance(parameters, dict):
        raise ValueError("the parameters on stdin must be a JSON object")
    return parameters


def _context(parameters: dict[str, Any]) -> JobContext:
    return JobContext(
        parameters=parameters,
        run_id=os.environ.get(JOB_RUN_ID_ENV, ""),
        logger=_stderr_logger(),
        workflow_event_context=get_workflow_event_context(),
        publisher=_LazyPublishing(),
    )


class _LazyPublishing:
    """Imports the event bus only when the job publishes (children should start fast)."""

    def publish(self, event: dict[str, Any]) -> dict[str, Any]:
        from apphub.bus.publisher import BusPublishing

        return BusPublishing().publish(event)

    async def publish_async(self, event: dict[str, Any]) -> dict[str, Any]:
        from apphub.bus.publisher import BusPublishing

        return await BusPublishing().publish_async(event)


def _stderr_logger() -> logging.Logger:
    """ctx.logger writes `LEVEL message` lines to stderr, which the parent captures."""
    logger = logging.getLogger("apphub.job")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def _call(handler: Handler, context: JobContext) -> Any:
    """Call the handler; an async one (or one returning an awaitable) runs in a new event loop."""
    value = handler(context)
    if isinstance(value, Awaitable):
        import asyncio  # only async handlers pay for the event loop

        async def wait() -> Any:
            return await value

        value = asyncio.run(wait())
    return value


def _emit(value: Any, *, line_start: bool) -> int:
    """Print the outcome as the last stdout line; a result that is not JSON fails the run."""
    outcome = settle(value)
    if outcome.failure_reason == "invalid-result":
        print(outcome.error_message, file=sys.stderr)
        return 1
    envelope = {
        "status": outcome.status,
        "result": outcome.result,
        "errorMessage": outcome.error_message,
    }
    prefix = "" if line_start else "\n"
    sys.stdout.write(prefix + json.dumps(envelope) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
