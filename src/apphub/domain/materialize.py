"""The asset materializer's rules: what to do with each event, and with each run's end (no I/O).

For an `asset.produced` of asset A by workflow W, every workflow C that consumes A is
considered for the event's partition, in this order:
- C is W itself → skip `self-produced`;
- C has no produced asset with an `autoMaterialize` block → skip `no-policy`;
- its policy is `enabled: false` → skip `disabled`; without `onUpstreamUpdate` → skip
  `no-policy`;
- C's latest production (same partition) is not older than the event → skip `not-stale`;
- an auto run of C for the partition is in flight → coalesce `in-flight` (one follow-up
  when it ends, if the upstream changed after it started);
- C is in failure cooldown → defer `cooldown` (the work is kept and re-decided when the
  cooldown ends);
- else launch `upstream-update`.
`asset.expired` and manual stale marks launch the asset's *producer* through the same
in-flight and cooldown gates (`expiry`, `manual-stale`); an expiry whose production has been
superseded is skipped `newer-production-exists`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from apphub.domain.asset_graph import AssetGraph, Policy
from apphub.domain.base import iso_ms, parse_iso

Outcome = Literal["launched", "coalesced", "deferred", "skipped"]
RefreshReason = Literal["expiry", "manual-stale"]
MAX_FAILURES = 32
FOLLOW_UP = "follow-up"
"""The decision reason of the one run owed after a run that upstream changes overtook."""
FORCED_REASONS = frozenset({FOLLOW_UP, "manual-stale"})
"""Owed work that runs whatever the consumer's latest production says."""


EXPLANATIONS = {
    "upstream-update": "an asset it consumes changed, so its producer was launched",
    FOLLOW_UP: "upstream changed while the last auto run was in flight: one follow-up run",
    "expiry": "its freshness window (ttlMs or cadenceMs) ran out, so its producer was launched",
    "manual-stale": "it was marked stale, so its producer was launched",
    "in-flight": "an auto run for this partition was in flight: the change rides along with it",
    "cooldown": "the producer is cooling down after failures: the work runs when it ends",
    "not-stale": "the producer's latest production is not older than the change",
    "no-policy": "nothing the workflow produces has an autoMaterialize block with this trigger",
    "disabled": "the workflow's autoMaterialize block says enabled: false",
    "self-produced": "the workflow produced the change itself",
    "newer-production-exists": "a newer production exists, so the expiry is moot",
    "run-canceled": "the auto run was canceled, so the follow-up it owed is not run",
    "invalid-parameters": "the run could not be created: its parameters fail the schema",
    "invalid-partition": "the run could not be created: the partition key is not allowed",
}
"""Why, in a sentence, for each decision reason (the explain API and `apphub assets why`)."""


@dataclass(frozen=True, slots=True)
class WorkflowState:
    """What is known of one (workflow, partition) when an event arrives."""

    latest_production: datetime | None = None
    """The newest production of any asset the workflow produces, for the partition."""
    in_flight_run: str | None = None
    cooldown_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    workflow_id: str
    workflow_slug: str
    outcome: Outcome
    reason: str
    priority: int = 0

    @property
    def launches(self) -> bool:
        return self.outcome == "launched"


def _gate(policy: Policy, state: WorkflowState, now: datetime, reason: str) -> Decision:
    """The gates every launch passes: in flight → coalesce, cooldown → defer, else launch."""
    if state.in_flight_run is not None:
        return decision(policy, "coalesced", "in-flight")
    if state.cooldown_until is not None and state.cooldown_until > now:
        return decision(policy, "deferred", "cooldown")
    return decision(policy, "launched", reason)


def decision(policy: Policy, outcome: Outcome, reason: str) -> Decision:
    return Decision(policy.workflow_id, policy.workflow_slug, outcome, reason, policy.priority)


def _policy_gate(policy: Policy) -> Decision | None:
    if not policy.has_block:
        return decision(policy, "skipped", "no-policy")
    if not policy.enabled:
        return decision(policy, "skipped", "disabled")
    return None


def decide_upstream_update(
    graph: AssetGraph,
    asset_key: str,
    producer_id: str | None,
    produced_at: datetime,
    states: Mapping[str, WorkflowState],
    now: datetime,
) -> list[Decision]:
    """One decision per workflow consuming the asset, lowest priority first, then by slug."""
    decisions = []
    for consumer in graph.consumers_of(asset_key):
        state = states.get(consumer.workflow_id, WorkflowState())
        decisions.append(_upstream(consumer, producer_id, produced_at, state, now))
    return sorted(decisions, key=lambda d: (d.priority, d.workflow_slug))


def _upstream(
    consumer: Policy,
    producer_id: str | None,
    produced_at: datetime,
    state: WorkflowState,
    now: datetime,
) -> Decision:
    if consumer.workflow_id == producer_id:
        return decision(consumer, "skipped", "self-produced")
    refused = _policy_gate(consumer)
    if refused is not None:
        return refused
    if not consumer.on_upstream_update:
        return decision(consumer, "skipped", "no-policy")
    if state.latest_production is not None and state.latest_production >= produced_at:
        return decision(consumer, "skipped", "not-stale")
    return _gate(consumer, state, now, "upstream-update")


@dataclass(frozen=True, slots=True)
class Produced:
    """One `asset.produced` event, as the rules read it."""

    asset_key: str
    producer_id: str | None
    produced_at: datetime
    partition: str
    """The stored form ('' for none)."""


LAUNCHING = "(launching)"
"""The in-flight run of a launch decided earlier in the same batch of events."""


def decide_produced(
    graph: AssetGraph,
    events: Sequence[Produced],
    states: Mapping[tuple[str, str], WorkflowState],
    now: datetime,
) -> list[list[Decision]]:
    """Decisions for events in arrival order: a launch is in flight for the events after it.

    `states` are keyed by (workflow, partition), read before the first event.
    """
    current = dict(states)
    decided = []
    for event in events:
        consumers = [policy.workflow_id for policy in graph.consumers_of(event.asset_key)]
        seen = {wid: current.get((wid, event.partition), WorkflowState()) for wid in consumers}
        decisions = decide_upstream_update(
            graph, event.asset_key, event.producer_id, event.produced_at, seen, now
        )
        for chosen in decisions:
            if chosen.launches:
                key = (chosen.workflow_id, event.partition)
                current[key] = replace(seen[chosen.workflow_id], in_flight_run=LAUNCHING)
        decided.append(decisions)
    return decided


def decide_refresh(
    graph: AssetGraph,
    asset_key: str,
    producer_id: str,
    reason: RefreshReason,
    superseded: bool,
    state: WorkflowState,
    now: datetime,
) -> Decision | None:
    """An expiry timer fired, or someone marked the asset stale: run its producer again.

    None when the workflow does not (or no longer) produce the asset: nothing to decide.
    """
    producer = graph.policies.get(producer_id)
    if producer is None or asset_key not in producer.produces:
        return None
    if asset_key not in producer.blocked:  # another asset's block does not opt this one in
        return decision(producer, "skipped", "no-policy")
    refused = _policy_gate(producer)
    if refused is not None:
        return refused
    if superseded:
        return decision(producer, "skipped", "newer-production-exists")
    return _gate(producer, state, now, reason)


# --- work kept for the end of a cooldown -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    """Work a (workflow, partition) is owed when its cooldown ends: the one run it will get."""

    reason: str
    """`upstream-update`, `expiry`, `manual-stale`, or `follow-up`."""
    produced_at: datetime | None = None
    """The production the work answers: the upstream's, or the one that expired."""
    cause: Mapping[str, Any] = field(default_factory=dict)
    """What the launched run's trigger will say (event id, assets, upstream)."""

    @property
    def forced(self) -> bool:
        return self.reason in FORCED_REASONS

    def as_json(self) -> dict[str, Any]:
        produced_at = iso_ms(self.produced_at) if self.produced_at is not None else None
        return {"reason": self.reason, "producedAt": produced_at, "cause": dict(self.cause)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pending:
        produced_at = data.get("producedAt")
        return cls(
            reason=str(data["reason"]),
            produced_at=parse_iso(produced_at) if produced_at else None,
            cause=dict(data.get("cause") or {}),
        )


def merge_pending(current: Pending | None, new: Pending) -> Pending:
    """One run covers all owed work: forced work stays forced, else the newest wins."""
    if current is None:
        return new
    if current.forced != new.forced:
        return current if current.forced else new
    return new if _moment(new) >= _moment(current) else current


def _moment(pending: Pending) -> datetime:
    return pending.produced_at or datetime.min.replace(tzinfo=UTC)


def decide_after_cooldown(
    policy: Policy | None, pending: Pending, state: WorkflowState, now: datetime
) -> Decision | None:
    """A cooldown ended with work owed: run it, unless it is no longer needed.

    Owed upstream updates and expiries are checked again against the workflow's latest
    production (a manual run during the cooldown may have done the work); follow-ups and
    manual stale marks run regardless.
    """
    if policy is None:
        return None
    refused = _policy_gate(policy)
    if refused is not None:
        return refused
    if _already_done(pending, state.latest_production):
        reason = "newer-production-exists" if pending.reason == "expiry" else "not-stale"
        return decision(policy, "skipped", reason)
    return _gate(policy, state, now, pending.reason)


def _already_done(pending: Pending, latest: datetime | None) -> bool:
    """Whether a production since the work was owed covers it. An upstream update is covered
    by a production at least as new as the upstream's; an expiry only by one newer than the
    production that expired (that production is itself the latest until the rerun)."""
    if pending.forced or latest is None or pending.produced_at is None:
        return False
    if pending.reason == "expiry":
        return latest > pending.produced_at
    return latest >= pending.produced_at


# --- when an auto run ends ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    base_ms: int = 120_000
    max_ms: int = 1_800_000

    def delay(self, failures: int) -> timedelta:
        return timedelta(milliseconds=min(self.max_ms, self.base_ms * 2 ** (failures - 1)))


@dataclass(frozen=True, slots=True)
class Completion:
    """What the end of an auto run changes for its (workflow, partition)."""

    failures: int
    cooldown_until: datetime | None
    follow_up: bool
    """Launch one more run now: the upstream changed while the run was in flight."""
    follow_up_deferred: bool
    """A follow-up is owed but the workflow is cooling down: it runs when the cooldown ends."""
    follow_up_dropped: bool = False
    """A follow-up was owed, but an operator canceled the run: it is recorded, not run."""


def follow_up_owed(coalesced_upstream_at: datetime | None, run_started_at: datetime | None) -> bool:
    """An upstream change coalesced into a run is owed a follow-up when it was produced after
    the run started (or the run has not started): the run may not have seen it."""
    return coalesced_upstream_at is not None and (
        run_started_at is None or coalesced_upstream_at > run_started_at
    )


def on_run_completed(
    status: str,
    previous_failures: int,
    coalesced_upstream_at: datetime | None,
    run_started_at: datetime | None,
    now: datetime,
    backoff: Backoff,
) -> Completion:
    """`failures = min(prev + 1, 32)`, cooldown `min(MAX, BASE·2^(failures-1))`; success resets.

    A follow-up is owed when an upstream event was coalesced into the run and produced after
    the run started (the run may not have seen it). A canceled run neither fails nor resets
    the count, and its owed follow-up is not run: the operator stopped that work.
    """
    owed = follow_up_owed(coalesced_upstream_at, run_started_at)
    if status == "canceled":
        return Completion(previous_failures, None, False, False, follow_up_dropped=owed)
    succeeded = status == "succeeded"
    failures = 0 if succeeded else min(previous_failures + 1, MAX_FAILURES)
    cooldown_until = None if succeeded else now + backoff.delay(failures)
    return Completion(
        failures=failures,
        cooldown_until=cooldown_until,
        follow_up=owed and cooldown_until is None,
        follow_up_deferred=owed and cooldown_until is not None,
    )


# --- what a launched run gets -------------------------------------------------------------------


def launch_parameters(
    default_parameters: Mapping[str, Any] | None,
    policy: Policy,
    partition_parameters: Mapping[str, Any] | None,
    partition_key: str | None,
) -> dict[str, Any]:
    """defaultParameters ← autoMaterialize.parameterDefaults ← partition parameters ← key."""
    merged: dict[str, Any] = dict(default_parameters or {})
    merged.update(policy.parameter_defaults)
    merged.update(partition_parameters or {})
    if partition_key:
        merged["partitionKey"] = partition_key
    return merged


def expiry_due(freshness: Mapping[str, Any], produced_at: datetime) -> list[tuple[str, datetime]]:
    """The expiry timers a production sets: (reason, due) for `ttlMs` and `cadenceMs`.

    A job may report any `producedAt` (9999-12-31 included): a due time past the last
    representable moment would never come, so it is no timer rather than an error that
    would abort the handling of every event alongside it.
    """
    due = []
    for reason, key in (("ttl", "ttlMs"), ("cadence", "cadenceMs")):
        window = freshness.get(key)
        if window:
            try:
                due.append((reason, produced_at + timedelta(milliseconds=int(window))))
            except OverflowError:
                continue
    return due
