"""The pure parts of the job runtimes: the author-facing module, buffers, result reading."""

from __future__ import annotations

import itertools
import json
import math
import os
import sysconfig
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apphub.engine.runtimes import JobInvocation, TailBuffer
from apphub.engine.runtimes.environment import child_env
from apphub.engine.runtimes.handlers import EntryPointError, load_handler, settle
from apphub.engine.runtimes.results import LastLineBuffer, describe_exit, parse_result_line
from apphub.runtime import (
    JOB_RUN_ID_ENV,
    WORKFLOW_EVENT_CONTEXT_ENV,
    JobContext,
    JobResult,
    get_workflow_event_context,
    workflow_event_context,
)

CONTEXT = {
    "workflowDefinitionId": "wf-def-1",
    "workflowRunId": "wf-run-1",
    "workflowRunStepId": "step-run-1",
    "jobRunId": "job-run-1",
    "jobSlug": "build-report",
}


@pytest.fixture(autouse=True)
def _no_inherited_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKFLOW_EVENT_CONTEXT_ENV, raising=False)


# --- apphub.runtime -----------------------------------------------------------------------


def test_no_workflow_event_context_outside_a_step() -> None:
    assert get_workflow_event_context() is None


def test_workflow_event_context_is_set_for_the_block_and_reset_after() -> None:
    inner = CONTEXT | {"workflowRunStepId": "step-run-2"}
    with workflow_event_context(CONTEXT):
        assert get_workflow_event_context() == CONTEXT
        with workflow_event_context(inner):
            assert get_workflow_event_context() == inner
        assert get_workflow_event_context() == CONTEXT
    assert get_workflow_event_context() is None


def test_workflow_event_context_is_reset_when_the_block_raises() -> None:
    with pytest.raises(KeyError), workflow_event_context(CONTEXT):
        raise KeyError("x")
    assert get_workflow_event_context() is None


def test_the_getter_returns_a_copy() -> None:
    with workflow_event_context(CONTEXT):
        got = get_workflow_event_context()
        assert got is not None
        got["jobSlug"] = "changed"
        assert get_workflow_event_context() == CONTEXT


def test_children_read_the_context_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKFLOW_EVENT_CONTEXT_ENV, json.dumps(CONTEXT))
    assert get_workflow_event_context() == CONTEXT
    in_process = CONTEXT | {"jobSlug": "other"}
    with workflow_event_context(in_process):
        assert get_workflow_event_context() == in_process


@pytest.mark.parametrize("raw", ["not json", "{", "[1, 2]", '"text"', "null"])
def test_an_unusable_environment_context_is_none(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(WORKFLOW_EVENT_CONTEXT_ENV, raw)
    assert get_workflow_event_context() is None


def test_job_result_and_context_defaults() -> None:
    assert JobResult() == JobResult(result=None, status="succeeded", error_message=None)
    context = JobContext(parameters={"a": 1}, run_id="run-1")
    assert context.workflow_event_context is None
    assert context.logger.name == "apphub.job"


# --- the bounded tail ---------------------------------------------------------------------


@given(st.lists(st.text(max_size=40), max_size=60), st.integers(min_value=1, max_value=100))
def test_tail_buffer_keeps_exactly_the_last_characters(pieces: list[str], limit: int) -> None:
    buffer = TailBuffer(limit)
    for piece in pieces:
        buffer.write(piece)
    written = "".join(pieces)
    assert buffer.text() == written[-limit:]
    assert buffer.truncated is (len(written) > limit)


def test_tail_buffer_with_one_huge_write() -> None:
    buffer = TailBuffer(10)
    buffer.write("abc")
    buffer.write("0123456789" * 100 + "END")
    assert buffer.text() == "3456789END"
    assert buffer.truncated


def test_tail_buffer_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TailBuffer(0)


# --- the result line ----------------------------------------------------------------------


def _oracle_last_line(text: str) -> str | None:
    lines = [line for line in text.split("\n") if line.strip()]
    return lines[-1] if lines else None


@given(
    st.text(alphabet=st.sampled_from("ab {}\n"), max_size=200),
    st.lists(st.integers(min_value=0, max_value=200), max_size=10),
)
def test_last_line_does_not_depend_on_how_output_is_split(text: str, cuts: list[int]) -> None:
    buffer = LastLineBuffer()
    bounds = [0, *sorted(min(cut, len(text)) for cut in cuts), len(text)]
    for start, end in itertools.pairwise(bounds):
        buffer.write(text[start:end])
    assert buffer.last_line() == _oracle_last_line(text)
    assert not buffer.overflowed


def test_a_last_line_over_the_limit_is_reported_not_kept() -> None:
    buffer = LastLineBuffer(limit=10)
    buffer.write("short\n")
    buffer.write("0123456789")
    buffer.write("ABC")
    assert (buffer.last_line(), buffer.overflowed) == (None, True)
    buffer.write("\n\n")
    assert (buffer.last_line(), buffer.overflowed) == (None, True)
    buffer.write("fine")
    assert (buffer.last_line(), buffer.overflowed) == ("fine", False)


@pytest.mark.parametrize(
    ("line", "status", "result", "error", "reason"),
    [
        (None, "succeeded", None, None, None),
        ("plain text", "succeeded", None, None, None),
        ("42", "succeeded", 42, None, None),
        ("[1, 2]", "succeeded", [1, 2], None, None),
        ('{"count": 3}', "succeeded", {"count": 3}, None, None),
        ('{"status": "green"}', "succeeded", {"status": "green"}, None, None),
        ('{"result": {"a": 1}}', "succeeded", {"a": 1}, None, None),
        ('{"status": "succeeded"}', "succeeded", None, None, None),
        ('{"status": "failed", "errorMessage": "no rows"}', "failed", None, "no rows", None),
        ('{"status": "failed", "error": "bad", "result": 1}', "failed", 1, "bad", None),
        ('{"status": "failed"}', "failed", None, "job reported status 'failed'", None),
        ('{"status": "done", "result": 1}', "failed", None, None, "invalid-result"),
    ],
)
def test_parse_result_line(
    line: str | None, status: str, result: Any, error: str | None, reason: str | None
) -> None:
    outcome = parse_result_line(line)
    assert (outcome.status, outcome.result) == (status, result)
    if status == "failed":
        assert outcome.failure_reason == (reason or "result-status")
        if error is not None:
            assert outcome.error_message == error
    else:
        assert (outcome.error_message, outcome.failure_reason) == (None, None)


def test_describe_exit() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "killed by signal SIGKILL"
    assert describe_exit(-1000) == "exited with code -1000"


# --- handlers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "status", "result", "reason"),
    [
        ({"a": (1, 2)}, "succeeded", {"a": [1, 2]}, None),
        (None, "succeeded", None, None),
        (JobResult(result=[1]), "succeeded", [1], None),
        (JobResult(status="failed", error_message="x"), "failed", None, "result-status"),
        (JobResult(status="bogus"), "failed", None, "invalid-result"),  # type: ignore[arg-type]
        ({"x": object()}, "failed", None, "invalid-result"),
        (math.inf, "failed", None, "invalid-result"),
    ],
)
def test_settle(value: object, status: str, result: object, reason: str | None) -> None:
    outcome = settle(value)
    assert (outcome.status, outcome.result, outcome.failure_reason) == (status, result, reason)


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        ("json", "must look like"),
        (":dumps", "must look like"),
        ("json:", "must look like"),
        ("json:no_such_thing", "has no attribute 'no_such_thing'"),
        ("apphub_no_such_module:run", "No module named 'apphub_no_such_module'"),
        ("json.decoder:JSONDecoder.scan_once", "cannot load"),
        ("sys:maxsize", "is not callable"),
    ],
)
def test_load_handler_failures_name_the_entry_point(entry_point: str, message: str) -> None:
    with pytest.raises(EntryPointError, match=message) as caught:
        load_handler(entry_point)
    assert repr(entry_point) in str(caught.value)


def test_load_handler_follows_dotted_attributes() -> None:
    assert load_handler("json:JSONDecoder.decode") is json.JSONDecoder.decode


# --- the child's environment ----------------------------------------------------------------


def _invocation(**options: Any) -> JobInvocation:
    return JobInvocation(
        runtime="command", entry_point="true", parameters={}, run_id="run-5", **options
    )


def test_child_env_carries_run_id_context_and_job_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPHUB_TEST_INHERITED", "from-worker")
    env = child_env(_invocation(workflow_event_context=CONTEXT, env={"GREETING": "hi"}))
    assert env[JOB_RUN_ID_ENV] == "run-5"
    assert json.loads(env[WORKFLOW_EVENT_CONTEXT_ENV]) == CONTEXT
    assert (env["GREETING"], env["APPHUB_TEST_INHERITED"]) == ("hi", "from-worker")
    assert env["PYTHONUNBUFFERED"] == "1"


def test_child_env_drops_a_stale_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKFLOW_EVENT_CONTEXT_ENV, "{}")
    assert WORKFLOW_EVENT_CONTEXT_ENV not in child_env(_invocation())


def test_child_pythonpath_starts_with_cwd_and_leaves_out_the_stdlib() -> None:
    entries = child_env(_invocation(env={"PYTHONPATH": "/opt/extra"}))["PYTHONPATH"].split(
        os.pathsep
    )
    assert entries[:2] == [os.getcwd(), "/opt/extra"]
    assert sysconfig.get_paths()["stdlib"] not in entries
    assert sysconfig.get_paths()["purelib"] not in entries
