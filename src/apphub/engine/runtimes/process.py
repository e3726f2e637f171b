"""Running a job as a child process: the part the `subprocess` and `command` runtimes share.

The child gets the parameters as JSON on stdin and the context in its environment; its
stdout and stderr are read as they come into the bounded logs tail, and the last stdout line
is its result. The child leads a process group of its own, so a timeout, a cancelled task or
a finished run never leaves any of its processes behind.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from apphub.engine.runtimes.base import JobInvocation, JobOutcome, TailBuffer, elapsed_ms
from apphub.engine.runtimes.environment import child_env
from apphub.engine.runtimes.results import (
    RESULT_LINE_LIMIT,
    LastLineBuffer,
    describe_exit,
    parse_result_line,
)

STDERR_MESSAGE_LIMIT = 2000
"""Characters of stderr quoted in the error message of a non-zero exit."""
KILL_GRACE_S = 2.0
"""Time between SIGTERM and SIGKILL."""
DRAIN_GRACE_S = 1.0
"""How long output is still read once the group is gone (an escaped process may hold a pipe)."""
_READ_CHUNK = 64 * 1024


class _ChildProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that also says when the process exits.

    On Python 3.11 `Process.wait()` also waits for every pipe to close, which a leftover
    grandchild can postpone forever.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_READ_CHUNK, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


class _Child:
    """A started child: its transport (pid, exit code) and its protocol (streams, exit)."""

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _ChildProtocol) -> None:
        self.transport = transport
        self.protocol = protocol
        self.pid = transport.get_pid()

    def signal_group(self, signum: signal.Signals) -> None:
        """Signal every process of the job; a group that is already gone is fine."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    async def exited(self) -> None:
        """Wait for the exit; cancelling the waiter does not cancel the shared future."""
        await asyncio.shield(self.protocol.exited)


class _Capture:
    """Where a child's output goes: the shared logs tail, the stderr tail, the result line."""

    def __init__(self) -> None:
        self.logs = TailBuffer()
        self.stderr = TailBuffer(STDERR_MESSAGE_LIMIT)
        self.stdout_line = LastLineBuffer()

    def on_stdout(self, text: str) -> None:
        self.logs.write(text)
        self.stdout_line.write(text)

    def on_stderr(self, text: str) -> None:
        self.logs.write(text)
        self.stderr.write(text)


async def run_process(argv: Sequence[str], invocation: JobInvocation) -> JobOutcome:
    """Run `argv` as the job; cancelling the awaiting task kills the process group first."""
    started = time.monotonic()
    try:
        child = await _spawn(argv, invocation)
    except OSError as error:
        message = f"cannot start {argv[0]!r}: {error}"
        failed = JobOutcome(status="failed", error_message=message, failure_reason="import-error")
        return replace(failed, duration_ms=elapsed_ms(started))
    capture = _Capture()
    try:
        outcome = await _supervise(child, invocation, capture)
    finally:
        child.transport.close()
    return replace(outcome, logs_tail=capture.logs.text(), duration_ms=elapsed_ms(started))


async def _spawn(argv: Sequence[str], invocation: JobInvocation) -> _Child:
    """Start the child as the leader of a new session, so its whole group can be signalled."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _ChildProtocol(loop),
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(invocation),
        cwd=invocation.cwd,
        start_new_session=True,
    )
    return _Child(transport, protocol)


async def _supervise(child: _Child, invocation: JobInvocation, capture: _Capture) -> JobOutcome:
    """Wait for the child under the timeout; on timeout, cancellation or error, kill it first."""
    stdin = json.dumps(invocation.parameters).encode()
    scope = asyncio.timeout(invocation.timeout_s)
    try:
        async with scope:
            await _communicate(child, stdin, capture)
    except BaseException as error:
        await _terminate(child)
        if isinstance(error, TimeoutError) and scope.expired():
            message = f"timed out after {invocation.timeout_s}s"
            return JobOutcome(status="expired", error_message=message, failure_reason="timeout")
        raise
    return _settle(child.transport.get_returncode(), capture)


async def _communicate(child: _Child, stdin: bytes, capture: _Capture) -> None:
    """Feed stdin and read both outputs concurrently until the child exits and the pipes close."""
    protocol = child.protocol
    if protocol.stdin is None or protocol.stdout is None or protocol.stderr is None:
        raise RuntimeError("the child process was started without pipes")
    tasks = [
        asyncio.ensure_future(_feed(protocol.stdin, stdin)),
        asyncio.ensure_future(_pump(protocol.stdout, capture.on_stdout)),
        asyncio.ensure_future(_pump(protocol.stderr, capture.on_stderr)),
    ]
    try:
        await child.exited()
        child.signal_group(signal.SIGKILL)  # what the job left running does not outlive it
        await asyncio.wait(tasks, timeout=DRAIN_GRACE_S)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    """Write the parameters and close stdin; a child that never reads them is not an error."""
    try:
        stdin.write(data)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.wait_closed()


async def _pump(stream: asyncio.StreamReader, sink: Callable[[str], None]) -> None:
    """Decode a stream as it arrives (invalid UTF-8 is replaced, never fatal)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await stream.read(_READ_CHUNK):
        sink(decoder.decode(chunk))
    sink(decoder.decode(b"", final=True))


async def _terminate(child: _Child) -> None:
    """SIGTERM the group, SIGKILL whatever is left after the grace, and wait for the exit.

    A second cancellation during the grace still ends in SIGKILL (the `finally`).
    """
    try:
        if not child.protocol.exited.done():
            child.signal_group(signal.SIGTERM)
            await asyncio.wait([child.protocol.exited], timeout=KILL_GRACE_S)
    finally:
        child.signal_group(signal.SIGKILL)
    await child.exited()


def _settle(returncode: int | None, capture: _Capture) -> JobOutcome:
    """A finished child's outcome: its exit status first, then its last stdout line."""
    if returncode != 0:
        message = describe_exit(returncode)
        stderr = _last_lines(capture.stderr)
        return JobOutcome(
            status="failed",
            error_message=f"{message}: {stderr}" if stderr else message,
            failure_reason="exit-code",
        )
    if capture.stdout_line.overflowed:
        return JobOutcome(
            status="failed",
            error_message=f"the last stdout line is longer than {RESULT_LINE_LIMIT} characters",
            failure_reason="invalid-result",
        )
    return parse_result_line(capture.stdout_line.last_line())


def _last_lines(stderr: TailBuffer) -> str:
    """The stderr tail, starting at a line boundary when its start was cut off."""
    text = stderr.text().strip()
    if stderr.truncated and "\n" in text:
        text = text.split("\n", 1)[1]
    return text
