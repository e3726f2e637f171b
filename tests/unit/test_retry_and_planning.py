"""Retry delays and the step planner (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from apphub.domain.planning import PlanStep, StepView, after_failure, plan
from apphub.domain.retry import RetryPolicy, retry_delay_ms

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def policy(**fields: object) -> RetryPolicy:
    return RetryPolicy.model_validate(fields)


def test_no_policy_means_no_retry() -> None:
    assert retry_delay_ms(None, 1, 0.5) is None


def test_strategies() -> None:
    assert retry_delay_ms(policy(maxAttempts=3, strategy="none"), 1, 0.5) == 0
    assert (
        retry_delay_ms(policy(maxAttempts=3, strategy="fixed", initialDelayMs=250), 2, 0.5) == 250
    )
    exponential = policy(maxAttempts=6, strategy="exponential", initialDelayMs=100, maxDelayMs=500)
    assert [retry_delay_ms(exponential, attempt, 0.5) for attempt in range(1, 6)] == [
        100,
        200,
        400,
        500,
        500,
    ]
    assert retry_delay_ms(exponential, 6, 0.5) is None


@given(st.integers(1, 9), st.floats(0, 0.999), st.floats(0, 1))
def test_jitter_stays_within_its_band(attempt: int, rand: float, jitter: float) -> None:
    rule = policy(maxAttempts=10, strategy="fixed", initialDelayMs=1000, jitter=jitter)
    delay = retry_delay_ms(rule, attempt, rand)
    assert delay is not None
    assert 1000 * (1 - jitter) - 1 <= delay <= 1000 * (1 + jitter) + 1


def test_after_failure_never_retries_what_cannot_change() -> None:
    rule = policy(maxAttempts=5)
    assert after_failure(rule, 1, "invalid-parameters", NOW, 0.5).retry is False
    retry = after_failure(rule, 1, "timeout", NOW, 0.5)
    assert retry.retry is True
    assert retry.next_attempt_at == NOW + timedelta(milliseconds=1000)


def diamond() -> list[PlanStep]:
    return [PlanStep("a"), PlanStep("b", ("a",)), PlanStep("c", ("a",)), PlanStep("d", ("b", "c"))]


def views(**statuses: str) -> dict[str, StepView]:
    return {step_id: StepView(status) for step_id, status in statuses.items()}  # type: ignore[arg-type]


def test_roots_start_first_then_branches_in_parallel() -> None:
    steps = diamond()
    assert plan(steps, views(a="pending", b="pending", c="pending", d="pending"), NOW).start == (
        "a",
    )
    second = plan(steps, views(a="succeeded", b="pending", c="pending", d="pending"), NOW)
    assert second.start == ("b", "c")
    limited = plan(steps, views(a="succeeded", b="pending", c="pending", d="pending"), NOW, 1)
    assert limited.start == ("b",)


def test_failure_skips_dependents_and_fails_the_run_once_settled() -> None:
    steps = diamond()
    running = plan(steps, views(a="succeeded", b="failed", c="running", d="pending"), NOW)
    assert running.skip == ("d",)
    assert running.outcome is None
    done = plan(steps, views(a="succeeded", b="failed", c="succeeded", d="skipped"), NOW)
    assert done.outcome == "failed"
    ok = plan(steps, views(a="succeeded", b="succeeded", c="succeeded", d="succeeded"), NOW)
    assert ok.outcome == "succeeded"


def test_scheduled_retry_waits_and_reports_when_to_wake() -> None:
    later = NOW + timedelta(seconds=30)
    states = {"a": StepView("pending", next_attempt_at=later)}
    waiting = plan([PlanStep("a")], states, NOW)
    assert waiting.start == ()
    assert waiting.wake_at == later
    assert waiting.outcome is None
    assert plan([PlanStep("a")], states, later).start == ("a",)


def test_fanout_children_respect_max_concurrency_and_finish_the_parent() -> None:
    steps = [PlanStep("f", (), max_concurrency=2), PlanStep("after", ("f",))]
    children = {
        f"f:t:{n}": StepView("pending", parent_step_id="f", fanout_index=n - 1) for n in range(1, 6)
    }
    states = {"f": StepView("running"), "after": StepView("pending"), **children}
    assert plan(steps, states, NOW).start_children == ("f:t:1", "f:t:2")
    finished = {
        key: StepView("succeeded", parent_step_id="f", fanout_index=i)
        for i, key in enumerate(children)
    }
    done = plan(steps, {"f": StepView("running"), "after": StepView("pending"), **finished}, NOW)
    assert done.finish_fanouts == {"f": "succeeded"}
    assert done.start == ("after",)


@given(
    st.lists(st.sampled_from(["pending", "running", "succeeded", "failed"]), min_size=4, max_size=4)
)
def test_plan_never_starts_a_step_whose_dependencies_did_not_succeed(statuses: list[str]) -> None:
    steps = diamond()
    states = views(**dict(zip("abcd", statuses, strict=True)))
    decision = plan(steps, states, NOW)
    by_id = {step.id: step for step in steps}
    for started in decision.start:
        assert states[started].status == "pending"
        assert all(states[dep].status == "succeeded" for dep in by_id[started].depends_on)
    assert not set(decision.start) & set(decision.skip)
