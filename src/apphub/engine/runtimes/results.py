"""Reading what a child process printed: its last stdout line is its result.

Pure text handling, shared by the `subprocess` and `command` runtimes and tested on its own.
"""

from __future__ import annotations

import contextlib
import json
import signal
from typing import Any

from apphub.engine.runtimes.base import JobOutcome

RESULT_LINE_LIMIT = 16 * 1024 * 1024
"""Longest last stdout line read as a result."""


class LastLineBuffer:
    """The last non-empty line of a stream written in arbitrary pieces, up to `limit` characters.

    A longer line is not kept; if it is the last one, `overflowed` says so.
    """

    def __init__(self, limit: int = RESULT_LINE_LIMIT) -> None:
        self._limit = limit
        self._parts: list[str] = []
        self._size = 0
        self._pending_overflow = False
        self._last: str | None = None
        self._last_overflowed = False

    def write(self, text: str) -> None:
        """Only the last non-empty line of each piece can matter, so only it is joined."""
        if "\n" not in text:
            self._extend(text)
            return
        head, *middle, rest = text.split("\n")
        self._extend(head)
        self._end_line()
        for line in reversed(middle):
            if line.strip():
                self._extend(line)
                self._end_line()
                break
        self._extend(rest)

    def last_line(self) -> str | None:
        """The last non-empty line, the unterminated end of the stream included."""
        if self._pending_overflow:
            return None
        pending = "".join(self._parts)
        return pending if pending.strip() else self._last

    @property
    def overflowed(self) -> bool:
        """Whether the last non-empty line was longer than the limit."""
        if self._pending_overflow:
            return True
        return not "".join(self._parts).strip() and self._last_overflowed

    def _extend(self, piece: str) -> None:
        if not piece or self._pending_overflow:
            return
        if self._size + len(piece) > self._limit:
            self._pending_overflow = True
            self._parts, self._size = [], 0
            return
        self._parts.append(piece)
        self._size += len(piece)

    def _end_line(self) -> None:
        line = "".join(self._parts)
        if self._pending_overflow:
            self._last, self._last_overflowed = None, True
        elif line.strip():
            self._last, self._last_overflowed = line, False
        self._parts, self._size, self._pending_overflow = [], 0, False


def describe_exit(returncode: int | None) -> str:
    """`exited with code N`, or the signal's name for a child killed by one."""
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def parse_result_line(line: str | None) -> JobOutcome:
    """Read the last stdout line of a child that exited 0.

    An object with `result` or a known `status` is an envelope; any other JSON value is the
    result itself; no output or text that is not JSON is a success with no result.
    """
    try:
        value = json.loads(line) if line else None
    except ValueError:
        value = None
    if not isinstance(value, dict) or not _is_envelope(value):
        return JobOutcome(status="succeeded", result=value)
    status = value.get("status", "succeeded")
    if status == "succeeded":
        return JobOutcome(status="succeeded", result=value.get("result"))
    if status == "failed":
        error = value.get("errorMessage") or value.get("error")
        return JobOutcome(
            status="failed",
            result=value.get("result"),
            error_message=str(error) if error else "job reported status 'failed'",
            failure_reason="result-status",
        )
    return JobOutcome(
        status="failed",
        error_message=f"unknown status {status!r} in the result line",
        failure_reason="invalid-result",
    )


def _is_envelope(value: dict[str, Any]) -> bool:
    """`{"status": "green"}` is a result, not an envelope: only known statuses count."""
    return "result" in value or value.get("status") in ("succeeded", "failed")
