"""The three job runtimes against real handlers and real child processes (no database).

Handlers live in tests/fixtures/jobs.py; pids written by children prove that a timeout or a
cancelled task leaves no process behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from apphub.engine.runtimes import LOGS_TAIL_LIMIT, JobInvocation, JobOutcome, run_job
from apphub.engine.runtimes.base import Runtime
from apphub.runtime import WORKFLOW_EVENT_CONTEXT_ENV, get_workflow_event_context

JOBS = "tests.fixtures.jobs"
PYTHON = shlex.quote(sys.executable)
WORKFLOW_CONTEXT = {
    "workflowDefinitionId": "wf-def-1",
    "workflowRunId": "wf-run-1",
    "workflowRunStepId": "step-run-1",
    "jobRunId": "job-run-1",
    "jobSlug": "build-report",
    "workflowRunKey": "2024-05-01",
}


def job(
    runtime: Runtime,
    entry_point: str,
    parameters: dict[str, Any] | None = None,
    **options: Any,
) -> JobInvocation:
    return JobInvocation(
        runtime=runtime,
        entry_point=entry_point,
        parameters=parameters or {},
        run_id=options.pop("run_id", "run-1"),
        **options,
    )


def python_command(code: str) -> str:
    return f"{PYTHON} -c {shlex.quote(code)}"


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie nobody reaped (no init in a container) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int, within_s: float = 2.0) -> bool:
    deadline = time.monotonic() + within_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def pid_in(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text else None


async def read_pid(path: Path, within_s: float = 5.0) -> int:
    deadline = time.monotonic() + within_s
    while (pid := pid_in(path)) is None:
        assert time.monotonic() < deadline, "the child never wrote its pid"
        await asyncio.sleep(0.02)
    return pid


@pytest.fixture(autouse=True)
def _no_inherited_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKFLOW_EVENT_CONTEXT_ENV, raising=False)


# --- python: in the worker -------------------------------------------------------------


@pytest.mark.parametrize("handler", ["echo", "async_echo"])
async def test_python_handler_returns_its_dict(handler: str) -> None:
    outcome = await run_job(job("python", f"{JOBS}:{handler}", {"n": 1}, run_id="run-7"))
    assert outcome.status == "succeeded"
    assert outcome.result["parameters"] == {"n": 1}
    assert outcome.result["runId"] == "run-7"
    assert (outcome.error_message, outcome.failure_reason) == (None, None)
    assert outcome.duration_ms >= 0


@pytest.mark.parametrize(("handler", "result"), [("answer", 42), ("nothing", None)])
async def test_python_any_json_return_is_the_result(handler: str, result: object) -> None:
    outcome = await run_job(job("python", f"{JOBS}:{handler}"))
    assert (outcome.status, outcome.result) == ("succeeded", result)


async def test_python_job_result_can_report_failure() -> None:
    outcome = await run_job(job("python", f"{JOBS}:reports_failure"))
    assert outcome.status == "failed"
    assert outcome.failure_reason == "result-status"
    assert outcome.error_message == "2 rows were invalid"
    assert outcome.result == {"checked": 3}


async def test_python_exception_fails_with_its_message_and_traceback() -> None:
    outcome = await run_job(job("python", f"{JOBS}:raises", {"value": 7}))
    assert outcome.status == "failed"
    assert outcome.failure_reason == "exception"
    assert outcome.error_message == "bad value: 7"
    assert outcome.logs_tail.startswith("INFO about to fail\n")
    assert "Traceback (most recent call last)" in outcome.logs_tail
    assert "ValueError: bad value: 7" in outcome.logs_tail


async def test_python_exception_without_message_names_its_class() -> None:
    outcome = await run_job(job("python", f"{JOBS}:raises_without_message"))
    assert (outcome.status, outcome.error_message) == ("failed", "RuntimeError")


async def test_python_sys_exit_fails_the_run_not_the_worker() -> None:
    outcome = await run_job(job("python", f"{JOBS}:calls_exit"))
    assert outcome.status == "failed"
    assert outcome.failure_reason == "exception"
    assert outcome.error_message == "handler called sys.exit(3)"


@pytest.mark.parametrize(
    "entry_point",
    ["tests.fixtures.no_such_module:run", f"{JOBS}:no_such_function", f"{JOBS}:math", "nocolon"],
)
async def test_python_unloadable_entry_point_is_an_import_error(entry_point: str) -> None:
    outcome = await run_job(job("python", entry_point))
    assert outcome.status == "failed"
    assert outcome.failure_reason == "import-error"
    assert entry_point in (outcome.error_message or "")


@pytest.mark.parametrize("handler", ["not_json", "nan"])
async def test_python_result_that_is_not_json_is_invalid(handler: str) -> None:
    outcome = await run_job(job("python", f"{JOBS}:{handler}"))
    assert outcome.status == "failed"
    assert outcome.failure_reason == "invalid-result"
    assert "not JSON-serialisable" in (outcome.error_message or "")


@pytest.mark.parametrize("handler", ["async_sleeps", "sleeps"])
async def test_python_timeout_expires_promptly(handler: str) -> None:
    """Sync handlers too: the run ends at the timeout even though their thread sleeps on."""
    started = time.monotonic()
    outcome = await run_job(job("python", f"{JOBS}:{handler}", {"seconds": 1.5}, timeout_s=0.2))
    assert time.monotonic() - started < 1.0
    assert outcome.status == "expired"
    assert outcome.failure_reason == "timeout"
    assert outcome.error_message == "timed out after 0.2s"


async def test_python_logger_lines_reach_the_logs_tail() -> None:
    outcome = await run_job(job("python", f"{JOBS}:logs", {"name": "sales"}))
    assert outcome.result == {"ok": True}
    assert outcome.logs_tail == "INFO loading sales\nWARNING slow disk\n"


@pytest.mark.parametrize("handler", ["context", "async_context"])
async def test_python_handler_sees_the_workflow_event_context(handler: str) -> None:
    invocation = job("python", f"{JOBS}:{handler}", workflow_event_context=WORKFLOW_CONTEXT)
    outcome = await run_job(invocation)
    assert outcome.result == {"fromGetter": WORKFLOW_CONTEXT, "fromCtx": WORKFLOW_CONTEXT}
    assert get_workflow_event_context() is None


@pytest.mark.parametrize("handler", ["async_sleeps", "sleeps"])
async def test_cancelling_a_python_run_raises_cancelled_error(handler: str) -> None:
    invocation = job(
        "python", f"{JOBS}:{handler}", {"seconds": 1.5}, workflow_event_context=WORKFLOW_CONTEXT
    )
    task = asyncio.create_task(run_job(invocation))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert get_workflow_event_context() is None


# --- subprocess: a child Python ----------------------------------------------------------


@pytest.mark.parametrize("handler", ["echo", "async_echo"])
async def test_subprocess_gets_parameters_on_stdin_and_returns_the_result(handler: str) -> None:
    parameters = {"n": 1, "nested": {"list": [1, "two", None]}, "text": "héllo"}
    outcome = await run_job(job("subprocess", f"{JOBS}:{handler}", parameters, run_id="run-9"))
    assert outcome.status == "succeeded", outcome.logs_tail
    assert outcome.result["parameters"] == parameters
    assert outcome.result["runId"] == "run-9"


async def test_subprocess_gets_the_workflow_event_context_from_its_env() -> None:
    invocation = job("subprocess", f"{JOBS}:context", workflow_event_context=WORKFLOW_CONTEXT)
    outcome = await run_job(invocation)
    assert outcome.result == {"fromGetter": WORKFLOW_CONTEXT, "fromCtx": WORKFLOW_CONTEXT}


async def test_subprocess_without_context_does_not_inherit_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(WORKFLOW_EVENT_CONTEXT_ENV, json.dumps({"workflowRunId": "stale"}))
    outcome = await run_job(job("subprocess", f"{JOBS}:context"))
    assert outcome.result == {"fromGetter": None, "fromCtx": None}


async def test_subprocess_job_result_failure_and_printed_lines() -> None:
    failed = await run_job(job("subprocess", f"{JOBS}:reports_failure"))
    assert (failed.status, failed.failure_reason) == ("failed", "result-status")
    assert (failed.error_message, failed.result) == ("2 rows were invalid", {"checked": 3})
    printed = await run_job(job("subprocess", f"{JOBS}:prints_then_returns"))
    assert (printed.status, printed.result) == ("succeeded", {"ok": True})
    assert "progress: half way\nno newline at the end\n" in printed.logs_tail


async def test_subprocess_exception_is_a_non_zero_exit_with_stderr() -> None:
    outcome = await run_job(job("subprocess", f"{JOBS}:raises", {"value": 7}))
    assert outcome.status == "failed"
    assert outcome.failure_reason == "exit-code"
    message = outcome.error_message or ""
    assert message.startswith("exited with code 1: ")
    assert message.endswith("ValueError: bad value: 7")
    assert "INFO about to fail" in outcome.logs_tail
    assert "Traceback (most recent call last)" in outcome.logs_tail


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("calls_exit", "exited with code 3"),
        ("no_such_function", "exited with code 1: cannot load entry point"),
        ("not_json", "exited with code 1: result is not JSON-serialisable"),
    ],
)
async def test_subprocess_failures_before_a_result(handler: str, message: str) -> None:
    outcome = await run_job(job("subprocess", f"{JOBS}:{handler}"))
    assert (outcome.status, outcome.failure_reason) == ("failed", "exit-code")
    assert (outcome.error_message or "").startswith(message)


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_subprocess_timeout_kills_the_child(tmp_path: Path, ignore_term: bool) -> None:
    """SIGTERM first; a child that ignores it is SIGKILLed after the 2 s grace."""
    pid_file = tmp_path / "pid"
    parameters = {"pidFile": str(pid_file), "ignoreTerm": ignore_term}
    invocation = job("subprocess", f"{JOBS}:writes_pid_and_sleeps", parameters, timeout_s=1.0)
    outcome = await run_job(invocation)
    assert outcome.status == "expired"
    assert (outcome.failure_reason, outcome.error_message) == ("timeout", "timed out after 1.0s")
    assert await gone(int(pid_file.read_text()))
    assert (outcome.duration_ms >= 3000) is ignore_term


async def test_cancelling_the_task_kills_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    invocation = job("subprocess", f"{JOBS}:writes_pid_and_sleeps", {"pidFile": str(pid_file)})
    task = asyncio.create_task(run_job(invocation))
    pid = await read_pid(pid_file)
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(pid)


async def test_logs_tail_keeps_the_last_64_kb() -> None:
    outcome = await run_job(job("subprocess", f"{JOBS}:prints_a_lot", {"lines": 20_000}))
    assert outcome.result == {"lines": 20_000}
    assert len(outcome.logs_tail) == LOGS_TAIL_LIMIT
    assert "line 019999 " in outcome.logs_tail
    assert "line 000000 " not in outcome.logs_tail
    assert "THE END" in outcome.logs_tail


# --- command: any executable -------------------------------------------------------------


async def test_command_reads_stdin_and_prints_a_result_envelope() -> None:
    code = (
        "import json, sys\n"
        "params = json.load(sys.stdin)\n"
        "print('adding')\n"
        "print(json.dumps({'result': {'sum': params['a'] + params['b']}}))\n"
    )
    outcome = await run_job(job("command", python_command(code), {"a": 1, "b": 2}))
    assert (outcome.status, outcome.result) == ("succeeded", {"sum": 3})
    assert outcome.logs_tail.startswith("adding\n")


@pytest.mark.parametrize(
    ("printed", "result"),
    [
        ("print(7)", 7),
        ("print('[1, 2]')", [1, 2]),
        ('print(\'{"status": "green"}\')', {"status": "green"}),
        ("print('{\"result\": 1}'); print('done')", None),
        ("print('{\"result\": 1}'); print(); print('  ')", 1),
        ("pass", None),
    ],
)
async def test_command_last_stdout_line_is_the_result(printed: str, result: object) -> None:
    outcome = await run_job(job("command", python_command(printed)))
    assert (outcome.status, outcome.result) == ("succeeded", result)


async def test_command_status_failed_envelope() -> None:
    envelope = {"status": "failed", "result": {"rows": 0}, "errorMessage": "empty input"}
    outcome = await run_job(job("command", python_command(f"print({json.dumps(envelope)!r})")))
    assert (outcome.status, outcome.failure_reason) == ("failed", "result-status")
    assert (outcome.error_message, outcome.result) == ("empty input", {"rows": 0})


async def test_command_non_zero_exit_quotes_stderr() -> None:
    command = shlex.join(["sh", "-c", "echo starting; echo disk full >&2; exit 4"])
    outcome = await run_job(job("command", command))
    assert (outcome.status, outcome.failure_reason) == ("failed", "exit-code")
    assert outcome.error_message == "exited with code 4: disk full"
    assert "starting\n" in outcome.logs_tail


async def test_command_gets_env_cwd_and_run_id(tmp_path: Path) -> None:
    code = (
        "import json, os\n"
        "print(json.dumps([os.environ['GREETING'], os.getcwd(), os.environ['APPHUB_JOB_RUN_ID'],"
        " json.loads(os.environ['APPHUB_WORKFLOW_EVENT_CONTEXT'])]))\n"
    )
    invocation = job(
        "command",
        python_command(code),
        run_id="run-3",
        env={"GREETING": "hello"},
        cwd=str(tmp_path),
        workflow_event_context=WORKFLOW_CONTEXT,
    )
    outcome = await run_job(invocation)
    assert outcome.result == ["hello", str(tmp_path), "run-3", WORKFLOW_CONTEXT]


@pytest.mark.parametrize("command", ["no-such-command-apphub --flag", "echo 'unclosed", "  "])
async def test_command_that_cannot_start_is_an_import_error(command: str) -> None:
    outcome = await run_job(job("command", command))
    assert (outcome.status, outcome.failure_reason) == ("failed", "import-error")
    assert outcome.error_message


async def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"sleep 30 & echo $! > {shlex.quote(str(pid_file))}; wait"
    outcome = await run_job(job("command", shlex.join(["sh", "-c", script]), timeout_s=0.5))
    assert outcome.status == "expired"
    assert await gone(await read_pid(pid_file))


async def test_processes_left_behind_by_a_finished_command_are_killed(tmp_path: Path) -> None:
    """The background sleep holds stdout open; the run still ends when the command does."""
    pid_file = tmp_path / "pid"
    script = f"sleep 30 & echo $! > {shlex.quote(str(pid_file))}; echo '{{\"result\": 1}}'"
    outcome: JobOutcome = await run_job(job("command", shlex.join(["sh", "-c", script])))
    assert (outcome.status, outcome.result) == ("succeeded", 1)
    assert outcome.duration_ms < 2000
    assert await gone(await read_pid(pid_file))
