"""The `python` runtime: call the handler inside the worker process.

Cheapest to start, but a handler shares the worker's process: async handlers are cancelled
on timeout, while a sync handler runs in a thread that cannot be killed. Jobs that may hang
belong in the `subprocess` runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
import os
import sys
import threading
import time
import traceback
from contextvars import copy_context
from dataclasses import replace
from typing import Any

from apphub.bus.publisher import BusPublishing
from apphub.engine.runtimes.base import JobInvocation, JobOutcome, TailBuffer, elapsed_ms
from apphub.engine.runtimes.handlers import (
    EntryPointError,
    Handler,
    exception_message,
    load_handler,
    settle,
)
from apphub.runtime import JobContext, workflow_event_context

_LOG_FORMAT = "%(levelname)s %(message)s"
_handlers: dict[str, Handler] = {}


class HandlerExit(RuntimeError):
    """A handler called sys.exit(); in the worker that must fail the run, not stop the worker."""


async def run_python(invocation: JobInvocation) -> JobOutcome:
    """Run the handler in this process; its ctx.logger lines become the logs tail."""
    started = time.monotonic()
    logs = TailBuffer()
    try:
        handler = await _load(invocation.entry_point)
    except EntryPointError as error:
        failed = JobOutcome(
            status="failed", error_message=str(error), failure_reason="import-error"
        )
        return _finish(failed, logs, started)
    context = JobContext(
        parameters=copy.deepcopy(invocation.parameters),
        run_id=invocation.run_id,
        logger=_job_logger(invocation.run_id, logs),
        workflow_event_context=copy.deepcopy(invocation.workflow_event_context),
        publisher=BusPublishing(),
    )
    outcome = await _invoke(handler, context, invocation, logs)
    return _finish(outcome, logs, started)


async def _load(entry_point: str) -> Handler:
    """Import once per entry point, in a thread so a slow import does not stall the loop."""
    handler = _handlers.get(entry_point)
    if handler is None:
        _make_cwd_importable()
        handler = await asyncio.to_thread(load_handler, entry_point)
        _handlers[entry_point] = handler
    return handler


def _make_cwd_importable() -> None:
    """Like `python -m`: modules in the working directory (`examples.x:f`) resolve."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def _job_logger(run_id: str, logs: TailBuffer) -> logging.Logger:
    """A logger of this run's own, kept out of the logging registry so it is freed with the run."""
    logger = logging.Logger(f"apphub.job.{run_id}", logging.DEBUG)
    handler = logging.StreamHandler(logs)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False
    return logger


async def _invoke(
    handler: Handler, context: JobContext, invocation: JobInvocation, logs: TailBuffer
) -> JobOutcome:
    """Call under the timeout with the workflow event context set; every ending is an outcome."""
    scope = asyncio.timeout(invocation.timeout_s)
    try:
        with workflow_event_context(invocation.workflow_event_context):
            async with scope:
                value = await _call(handler, context)
    except TimeoutError as error:
        if scope.expired():
            message = f"timed out after {invocation.timeout_s}s"
            return JobOutcome(status="expired", error_message=message, failure_reason="timeout")
        return _raised(error, logs)
    except Exception as error:
        return _raised(error, logs)
    return settle(value)


def _raised(error: BaseException, logs: TailBuffer) -> JobOutcome:
    """The message is the error; the traceback goes to the logs where people look for it."""
    logs.write("".join(traceback.format_exception(error)))
    return JobOutcome(
        status="failed", error_message=exception_message(error), failure_reason="exception"
    )


async def _call(handler: Handler, context: JobContext) -> Any:
    """Await async handlers here; run sync ones in a thread of their own."""
    try:
        if inspect.iscoroutinefunction(handler):
            return await handler(context)
        value = await _in_thread(handler, context)
        if inspect.isawaitable(value):
            value = await value
        return value
    except SystemExit as error:
        raise HandlerExit(f"handler called sys.exit({error.code!r})") from error


def _in_thread(handler: Handler, context: JobContext) -> asyncio.Future[Any]:
    """Run a sync handler in a daemon thread with a copy of the current contextvars.

    Not `asyncio.to_thread`: a handler that outlives its timeout cannot be killed, and in the
    default executor it would hold a shared worker slot and block interpreter shutdown. Here
    the abandoned thread keeps running until the handler returns, and nobody waits for it.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    variables = copy_context()

    def target() -> None:
        try:
            value = variables.run(handler, context)
        except SystemExit as error:
            _deliver(loop, future, None, HandlerExit(f"handler called sys.exit({error.code!r})"))
        except BaseException as error:
            _deliver(loop, future, None, error)
        else:
            _deliver(loop, future, value, None)

    name = f"apphub-job-{context.run_id}"
    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    value: Any,
    error: BaseException | None,
) -> None:
    """Hand the thread's outcome to the loop, unless the run has already given up on it."""

    def resolve() -> None:
        if future.done():
            return
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)

    with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
        loop.call_soon_threadsafe(resolve)


def _finish(outcome: JobOutcome, logs: TailBuffer, started: float) -> JobOutcome:
    return replace(outcome, logs_tail=logs.text(), duration_ms=elapsed_ms(started))
