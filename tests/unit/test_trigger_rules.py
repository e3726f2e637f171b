"""Trigger predicates, templates, decisions and cron occurrences: pure functions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from apphub.domain.schedules import Timing, due_occurrences, next_occurrence, run_key
from apphub.domain.trigger_predicates import Predicate, as_number, holds
from apphub.domain.trigger_rules import (
    Limits,
    PauseRule,
    TriggerState,
    after_failure,
    decide,
    throttle_backoff,
)
from apphub.domain.trigger_templates import TemplateProblem, check_template, render_value

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVENT = {
    "type": "metastore.record.updated",
    "source": "metastore.api",
    "payload": {"namespace": "Feature-Flags", "version": 12, "count": "7", "tags": ["a", "B"]},
}


def predicate(**fields: Any) -> Predicate:
    return Predicate.model_validate(fields)


OPERATOR_CASES = [
    ({"path": "$.payload.namespace", "operator": "exists"}, True),
    ({"path": "$.payload.nope", "operator": "exists"}, False),
    ({"path": "$.payload.namespace", "operator": "equals", "value": "feature-flags"}, True),
    (
        {
            "path": "$.payload.namespace",
            "operator": "equals",
            "value": "feature-flags",
            "caseSensitive": True,
        },
        False,
    ),
    ({"path": "$.payload.version", "operator": "equals", "value": 12}, True),
    ({"path": "$.payload.version", "operator": "equals", "value": "12"}, False),
    ({"path": "$.payload.namespace", "operator": "notEquals", "value": "FEATURE-FLAGS"}, False),
    ({"path": "$.payload.nope", "operator": "notEquals", "value": "x"}, True),
    ({"path": "$.source", "operator": "in", "values": ["METASTORE.API", "x"]}, True),
    ({"path": "$.payload.nope", "operator": "in", "values": ["x"]}, False),
    ({"path": "$.source", "operator": "notIn", "values": ["x"]}, True),
    ({"path": "$.payload.nope", "operator": "notIn", "values": ["x"]}, True),
    ({"path": "$.payload.version", "operator": "gt", "value": 11}, True),
    ({"path": "$.payload.version", "operator": "gte", "value": "12"}, True),
    ({"path": "$.payload.count", "operator": "lt", "value": 8}, True),
    ({"path": "$.payload.count", "operator": "lte", "value": 6.5}, False),
    ({"path": "$.payload.namespace", "operator": "gt", "value": 1}, False),
    ({"path": "$.payload.namespace", "operator": "contains", "value": "FLAG"}, True),
    (
        {
            "path": "$.payload.namespace",
            "operator": "contains",
            "value": "flag",
            "caseSensitive": True,
        },
        False,
    ),
    ({"path": "$.payload.tags", "operator": "contains", "value": "b"}, True),
    ({"path": "$.payload.tags[1]", "operator": "equals", "value": "b"}, True),
    ({"path": '$.payload["namespace"]', "operator": "regex", "value": "^feature-"}, True),
    (
        {
            "path": "$.payload.namespace",
            "operator": "regex",
            "value": "^feature",
            "caseSensitive": True,
        },
        False,
    ),
    (
        {
            "path": "$.payload.namespace",
            "operator": "regex",
            "value": "^feature",
            "caseSensitive": True,
            "flags": "i",
        },
        True,
    ),
    ({"path": "$.payload.version", "operator": "regex", "value": "12"}, False),
]


@pytest.mark.parametrize(("fields", "expected"), OPERATOR_CASES)
def test_each_operator(fields: dict[str, Any], expected: bool) -> None:
    assert holds(predicate(**fields), EVENT) is expected


@pytest.mark.parametrize(
    "fields",
    [
        {"path": "$.a", "operator": "gt", "value": "many"},
        {"path": "$.a", "operator": "gt", "value": True},
        {"path": "$.a", "operator": "regex", "value": "(a"},
        {"path": "$.a", "operator": "regex", "value": "(a+)+$"},
        {"path": "$.a", "operator": "regex", "value": "a", "flags": "x"},
        {"path": "$.a", "operator": "equals", "value": 1, "flags": "i"},
        {"path": "a.b", "operator": "exists"},
        {"path": "$.a..b", "operator": "exists"},
        {"path": "$.a", "operator": "in"},
        {"path": "$.a", "operator": "contains"},
        {"path": "$.a", "operator": "gt", "value": 10**400},
        {"path": "$.a", "operator": "lte", "value": "1e999"},
        {"path": "$.a", "operator": "lt", "value": "-Infinity"},
    ],
)
def test_invalid_predicates_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        predicate(**fields)


@pytest.mark.parametrize(
    "value",
    [10**400, -(10**400), "1e999", "inf", "-Infinity", "NaN", float("inf"), True],
    ids=["1e400", "-1e400", "1e999-string", "inf", "-Infinity", "NaN", "float-inf", "bool"],
)
def test_values_a_float_cannot_hold_finitely_are_not_numbers(value: Any) -> None:
    assert as_number(value) is None


@pytest.mark.parametrize("operator", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize("huge", [10**400, -(10**400), "1e999"], ids=["1e400", "-1e400", "str"])
def test_a_huge_payload_number_compares_false_instead_of_raising(operator: str, huge: Any) -> None:
    """An untrusted payload must not make evaluation raise (it would abort its batch)."""
    event = {"payload": {"n": huge}}
    assert holds(predicate(path="$.payload.n", operator=operator, value=1), event) is False


def test_templates_keep_types_and_check_filters() -> None:
    scope = {"event": EVENT, "now": "2026-01-01T00:00:00.000Z"}
    rendered = render_value(
        {
            "v": "{{ event.payload.version }}",
            "tags": "{{ event.payload.tags }}",
            "text": "v{{ event.payload.version }}",
            "missing": "{{ event.payload.nope }}",
            "json": "{{ event.payload.tags | json }}",
            "plain": 3,
        },
        scope,
    )
    assert rendered == {
        "v": 12,
        "tags": ["a", "B"],
        "text": "v12",
        "missing": None,
        "json": '["a","B"]',
        "plain": 3,
    }
    for bad in ("{{ x | shout }}", "{% if x %}", "{{ x"):
        with pytest.raises(TemplateProblem):
            check_template(bad)


def test_throttle_backoff_grows_to_fifteen_minutes() -> None:
    delays = [(throttle_backoff(n, T0, 0.5) - T0).total_seconds() for n in range(1, 12)]
    assert delays[:4] == [10, 20, 40, 80]
    assert max(delays) == 900
    low, high = throttle_backoff(1, T0, 0.0), throttle_backoff(1, T0, 0.999999)
    assert (low - T0).total_seconds() == 8
    assert round((high - T0).total_seconds()) == 12


def test_the_decision_order() -> None:
    limits = Limits(throttle_window_ms=1000, throttle_count=1, max_concurrency=2)
    paused = TriggerState(paused_until=T0 + timedelta(seconds=1))
    assert decide(limits, paused, None, T0).outcome == "skipped"
    assert decide(limits, paused, None, T0, retry=True).retry_at == paused.paused_until
    state = TriggerState()
    assert decide(limits, state, "k", T0).outcome == "launch"
    state.note_launch(T0, "k")
    assert decide(limits, state, "k", T0).reason == "duplicate"
    window = decide(limits, state, "j", T0 + timedelta(milliseconds=10))
    assert (window.outcome, window.retry_at) == ("throttled", T0 + timedelta(seconds=1))
    state.note_launch(T0 + timedelta(seconds=2), None)
    assert decide(limits, state, None, T0 + timedelta(seconds=4)).reason == "concurrency"


def test_failures_pause_at_the_threshold_and_the_window_slides() -> None:
    rule = PauseRule(threshold=3, window_ms=1000, pause_ms=5000)
    recent, paused = after_failure([], T0, rule)
    recent, paused = after_failure(recent, T0 + timedelta(milliseconds=500), rule)
    assert paused is None
    recent, paused = after_failure(recent, T0 + timedelta(milliseconds=1200), rule)
    assert paused is None  # the first one left the window
    assert len(recent) == 2
    recent, paused = after_failure(recent, T0 + timedelta(milliseconds=1300), rule)
    assert paused == T0 + timedelta(milliseconds=6300)
    assert recent == []


# --- properties ----------------------------------------------------------------------------

Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 4)),
        st.tuples(st.just("end"), st.integers(0, 50)),
        st.tuples(st.just("tick"), st.integers(1, 3000)),
    ),
    max_size=60,
)


@given(steps, st.integers(1, 4), st.integers(1, 5000))
@example(  # a key relaunched after its TTL: the TTL then runs from that launch (found in CI)
    script=[("event", 0), ("tick", 1), ("event", 0), ("event", 0)], max_concurrency=3, ttl_ms=1
)
def test_never_more_than_max_concurrency_active_runs(
    script: list[Step], max_concurrency: int, ttl_ms: int
) -> None:
    """However events, run ends and time interleave, active runs stay within the limit, and
    an idempotency key launches at most once per TTL."""
    limits = Limits(max_concurrency=max_concurrency, idempotency_ttl_ms=ttl_ms)
    state, now, active = TriggerState(), T0, 0
    launches: dict[str, list[datetime]] = {}
    for kind, value in script:
        if kind == "tick":
            now += timedelta(milliseconds=value)
        elif kind == "end" and active:
            active -= 1
            state.active_runs -= 1
        elif kind == "event":
            key = f"k{value}"
            verdict = decide(limits, state, key, now)
            if verdict.outcome == "launch":
                state.note_launch(now, key)
                active += 1
                launches.setdefault(key, []).append(now)
            elif verdict.outcome == "throttled":
                state.note_waiting(now, key)
        assert active <= max_concurrency
    for times in launches.values():
        for earlier, later in itertools.pairwise(times):
            assert later - earlier >= timedelta(milliseconds=ttl_ms)


@given(st.lists(st.integers(0, 5000), max_size=40), st.integers(1, 5), st.integers(100, 3000))
def test_never_more_than_throttle_count_launches_in_a_window(
    gaps: list[int], count: int, window_ms: int
) -> None:
    limits = Limits(throttle_window_ms=window_ms, throttle_count=count)
    state, now, launched = TriggerState(), T0, []
    for gap in gaps:
        now += timedelta(milliseconds=gap)
        verdict = decide(limits, state, None, now)
        if verdict.outcome == "launch":
            state.note_launch(now, None)
            launched.append(now)
        else:
            assert verdict.retry_at is not None
            assert verdict.retry_at > now
    for moment in launched:
        inside = [t for t in launched if moment - timedelta(milliseconds=window_ms) < t <= moment]
        assert len(inside) <= count


# --- cron ---------------------------------------------------------------------------------


def test_catch_up_takes_the_oldest_twenty_five_and_no_catch_up_the_latest() -> None:
    timing = Timing("* * * * *", "UTC")
    missed = due_occurrences(timing, T0, T0 + timedelta(hours=1))
    assert len(missed) == 25
    assert missed[0] == T0 + timedelta(minutes=1)
    assert missed[-1] == T0 + timedelta(minutes=25)
    latest = due_occurrences(
        Timing("* * * * *", "UTC", catch_up=False), T0, T0 + timedelta(hours=1)
    )
    assert latest == [T0 + timedelta(hours=1)]
    assert due_occurrences(timing, T0, T0 + timedelta(seconds=59)) == []


def test_windows_and_timezones() -> None:
    start, end = T0 + timedelta(hours=2), T0 + timedelta(hours=4)
    timing = Timing("0 * * * *", "UTC", start_window=start, end_window=end)
    assert next_occurrence(timing, T0) == start
    assert next_occurrence(timing, end) is None
    assert due_occurrences(timing, T0, T0 + timedelta(days=1)) == [
        start,
        start + timedelta(hours=1),
        end,
    ]
    berlin = Timing("0 2 * * *", "Europe/Berlin")
    assert next_occurrence(berlin, T0) == datetime(2026, 1, 1, 1, tzinfo=UTC)
    summer = datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert next_occurrence(berlin, summer) == datetime(2026, 7, 2, 0, tzinfo=UTC)
    assert run_key("abc", T0) == "schedule:abc:20260101T000000Z"
