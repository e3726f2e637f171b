"""What a run does next, decided from the DAG and the step states alone (no I/O).

The orchestrator loads the states, asks `plan`, persists the answer in one transaction and
starts what it says. Independent branches keep going when a step fails; the run fails once
nothing is left to run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from apphub.domain.retry import RetryPolicy, retry_delay_ms

StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "skipped", "canceled"})
BLOCKING: frozenset[str] = frozenset({"failed", "skipped", "canceled"})
RunOutcome = Literal["succeeded", "failed"]

NOT_RETRIED = frozenset(
    {
        "invalid-parameters",
        "canceled",
        "invalid-asset",
        "missing-asset",
        "missing-secret",
        "invalid-request",
    }
)
"""Failures that another attempt cannot fix."""


@dataclass(frozen=True, slots=True)
class PlanStep:
    """A top-level step as the planner sees it."""

    id: str
    depends_on: tuple[str, ...] = ()
    max_concurrency: int | None = None
    """Set for fan-out steps: how many children may run at once."""


@dataclass(frozen=True, slots=True)
class StepView:
    status: StepStatus
    next_attempt_at: datetime | None = None
    parent_step_id: str | None = None
    fanout_index: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    start: tuple[str, ...] = ()
    """Top-level steps to start now, in topological order."""
    start_children: tuple[str, ...] = ()
    """Fan-out children to start now."""
    skip: tuple[str, ...] = ()
    """Pending steps that can never run because a dependency did not succeed."""
    finish_fanouts: Mapping[str, RunOutcome] = field(default_factory=dict)
    """Fan-out steps whose children have all ended, with the fan-out's own outcome."""
    outcome: RunOutcome | None = None
    """Set when nothing is left to run."""
    wake_at: datetime | None = None
    """The earliest scheduled retry that is not due yet."""


def plan(
    steps: Sequence[PlanStep],
    states: Mapping[str, StepView],
    now: datetime,
    max_parallel: int | None = None,
) -> Plan:
    statuses = {step.id: states[step.id].status for step in steps}
    children = _children_by_parent(states)
    finished = _finished_fanouts(steps, statuses, children)
    statuses.update(finished)
    skipped = _skips(steps, statuses)
    statuses.update(dict.fromkeys(skipped, "skipped"))
    start = _ready_top_level(steps, states, statuses, now, max_parallel)
    start_children = _ready_children(steps, statuses, children, now)
    wake_at = _earliest_wait(steps, states, statuses, children, now)
    outcome = _outcome(steps, statuses) if not start and not start_children else None
    return Plan(
        start=start,
        start_children=start_children,
        skip=tuple(skipped),
        finish_fanouts=finished,
        outcome=outcome,
        wake_at=wake_at,
    )


def _children_by_parent(states: Mapping[str, StepView]) -> dict[str, list[tuple[str, StepView]]]:
    grouped: dict[str, list[tuple[str, StepView]]] = {}
    for step_id, view in states.items():
        if view.parent_step_id is not None:
            grouped.setdefault(view.parent_step_id, []).append((step_id, view))
    for members in grouped.values():
        members.sort(key=lambda member: member[1].fanout_index or 0)
    return grouped


def _finished_fanouts(
    steps: Sequence[PlanStep],
    statuses: Mapping[str, str],
    children: Mapping[str, list[tuple[str, StepView]]],
) -> dict[str, RunOutcome]:
    finished: dict[str, RunOutcome] = {}
    for step in steps:
        members = children.get(step.id)
        if step.max_concurrency is None or statuses[step.id] != "running" or not members:
            continue
        if all(view.status in TERMINAL for _, view in members):
            ok = all(view.status == "succeeded" for _, view in members)
            finished[step.id] = "succeeded" if ok else "failed"
    return finished


def _skips(steps: Sequence[PlanStep], statuses: Mapping[str, str]) -> list[str]:
    """Pending steps downstream of a failure, found in one pass over the (topological) order."""
    current = dict(statuses)
    skipped = []
    for step in steps:
        if current[step.id] == "pending" and any(current[d] in BLOCKING for d in step.depends_on):
            current[step.id] = "skipped"
            skipped.append(step.id)
    return skipped


def _due(view: StepView, now: datetime) -> bool:
    return view.next_attempt_at is None or view.next_attempt_at <= now


def _ready_top_level(
    steps: Sequence[PlanStep],
    states: Mapping[str, StepView],
    statuses: Mapping[str, str],
    now: datetime,
    max_parallel: int | None,
) -> tuple[str, ...]:
    running = sum(1 for step in steps if statuses[step.id] == "running")
    room = (max_parallel - running) if max_parallel is not None else len(steps)
    ready = [
        step.id
        for step in steps
        if statuses[step.id] == "pending"
        and all(statuses[d] == "succeeded" for d in step.depends_on)
        and _due(states[step.id], now)
    ]
    return tuple(ready[: max(room, 0)])


def _ready_children(
    steps: Sequence[PlanStep],
    statuses: Mapping[str, str],
    children: Mapping[str, list[tuple[str, StepView]]],
    now: datetime,
) -> tuple[str, ...]:
    ready: list[str] = []
    for step in steps:
        if step.max_concurrency is None or statuses[step.id] != "running":
            continue
        members = children.get(step.id, [])
        running = sum(1 for _, view in members if view.status == "running")
        waiting = [cid for cid, view in members if view.status == "pending" and _due(view, now)]
        ready += waiting[: max(step.max_concurrency - running, 0)]
    return tuple(ready)


def _earliest_wait(
    steps: Sequence[PlanStep],
    states: Mapping[str, StepView],
    statuses: Mapping[str, str],
    children: Mapping[str, list[tuple[str, StepView]]],
    now: datetime,
) -> datetime | None:
    waiting = [
        states[step.id].next_attempt_at
        for step in steps
        if statuses[step.id] == "pending" and not _due(states[step.id], now)
    ]
    for step in steps:
        if statuses[step.id] == "running":
            waiting += [
                view.next_attempt_at
                for _, view in children.get(step.id, [])
                if view.status == "pending" and not _due(view, now)
            ]
    times = [moment for moment in waiting if moment is not None]
    return min(times) if times else None


def _outcome(steps: Sequence[PlanStep], statuses: Mapping[str, str]) -> RunOutcome | None:
    if any(statuses[step.id] not in TERMINAL for step in steps):
        return None
    return "succeeded" if all(statuses[s.id] == "succeeded" for s in steps) else "failed"


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """What becomes of a step whose attempt failed: another attempt later, or failed for good."""

    retry: bool
    next_attempt_at: datetime | None


def after_failure(
    policy: RetryPolicy | None,
    attempt: int,
    failure_reason: str | None,
    now: datetime,
    rand: float,
) -> AttemptFailure:
    if failure_reason in NOT_RETRIED:
        return AttemptFailure(retry=False, next_attempt_at=None)
    delay = retry_delay_ms(policy, attempt, rand)
    if delay is None:
        return AttemptFailure(retry=False, next_attempt_at=None)
    return AttemptFailure(retry=True, next_attempt_at=now + timedelta(milliseconds=delay))


def with_status(view: StepView, status: StepStatus) -> StepView:
    return replace(view, status=status, next_attempt_at=None)
