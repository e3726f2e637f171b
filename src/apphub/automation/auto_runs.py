"""Carrying out the materializer's decisions: decision rows, claims, owed work, new runs.

All in the caller's transaction. A decision row is unique per (event, workflow, partition),
so a redelivered event writes nothing; a claim is unique per (workflow, partition), so a
launch that loses the race to another materializer becomes a coalesce; a coalesce whose
claim vanished (its run just ended) is decided again on the spot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.domain.asset_graph import Policy
from apphub.domain.base import iso_ms, parse_iso
from apphub.domain.errors import DefinitionError
from apphub.domain.materialize import (
    FOLLOW_UP,
    Decision,
    Pending,
    decision,
    launch_parameters,
    merge_pending,
)
from apphub.domain.requests import WorkflowRunRequest, pending_run, workflow_run_values
from apphub.domain.runs import WorkflowRun
from apphub.store import assets as asset_store
from apphub.store import materializer as mat_store
from apphub.store import metrics as metric_store
from apphub.store import workflow_runs as run_store
from apphub.store import workflows as workflow_store
from apphub.store.rows import new_id

TRIGGERED_BY = "asset-materializer"
"""`triggeredBy` of the runs the materializer launches (and of missing-dependency runs)."""


@dataclass(frozen=True)
class Cause:
    """What a set of decisions answers, and what a launched run's trigger will say."""

    event_id: str
    event_type: str
    reason: str
    """The launch reason: `upstream-update`, `expiry`, `manual-stale` or `follow-up`."""
    partition_key: str | None
    produced_at: datetime | None = None
    """The upstream's production (or the one that expired): the staleness reference."""
    asset_key: str | None = None
    """The asset to refresh (expiry, stale mark); None: each consumer's own target."""
    upstream: Mapping[str, Any] | None = None
    expiry_reason: str | None = None

    @property
    def partition(self) -> str:
        return asset_store.stored_partition(self.partition_key)

    def trigger(self, asset_id: str) -> dict[str, Any]:
        """CONTRACT's `trigger` of an auto run (a follow-up is an upstream update)."""
        reason = "upstream-update" if self.reason == FOLLOW_UP else self.reason
        trigger: dict[str, Any] = {
            "type": "auto-materialize",
            "reason": reason,
            "assetId": asset_id,
            "partitionKey": self.partition_key,
            "eventId": self.event_id,
        }
        if self.upstream is not None:
            trigger["upstream"] = dict(self.upstream)
        if self.expiry_reason is not None:
            trigger["expiry"] = {"reason": self.expiry_reason}
        return trigger

    def pending(self) -> Pending:
        return Pending(self.reason, self.produced_at, self.as_json())

    def as_json(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "eventType": self.event_type,
            "reason": self.reason,
            "partitionKey": self.partition_key,
            "producedAt": iso_ms(self.produced_at) if self.produced_at else None,
            "assetKey": self.asset_key,
            "upstream": dict(self.upstream) if self.upstream is not None else None,
            "expiryReason": self.expiry_reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cause:
        produced_at = data.get("producedAt")
        return cls(
            event_id=str(data["eventId"]),
            event_type=str(data["eventType"]),
            reason=str(data["reason"]),
            partition_key=data.get("partitionKey"),
            produced_at=parse_iso(produced_at) if produced_at else None,
            asset_key=data.get("assetKey"),
            upstream=data.get("upstream"),
            expiry_reason=data.get("expiryReason"),
        )


Planned = tuple[Cause, Decision]
"""A decision and the cause it answers."""
Key = tuple[str, str]
"""(workflow id, stored partition)."""


@dataclass
class Applied:
    launched: list[tuple[WorkflowRun, int]] = field(default_factory=list)
    """Runs to enqueue after the commit, with their priority."""
    recorded: list[tuple[Decision, Cause, str | None]] = field(default_factory=list)
    """Decisions newly written, their cause and the run they launched (logs, counters)."""


@dataclass
class _Writes:
    """What the decisions of one transaction add up to, per (workflow, partition)."""

    recorded: dict[tuple[str, str, str], tuple[Decision, Cause, str | None]] = field(
        default_factory=dict
    )
    coalesce: dict[Key, Cause] = field(default_factory=dict)
    """The newest cause coalesced into each in-flight run."""
    owed: dict[Key, Pending] = field(default_factory=dict)
    launched: list[tuple[WorkflowRun, int]] = field(default_factory=list)

    def record(self, cause: Cause, final: Decision, run_id: str | None = None) -> None:
        key = (cause.event_id, final.workflow_id, cause.partition)
        self.recorded[key] = (final, cause, run_id)

    def ride_along(self, cause: Cause, workflow_id: str) -> None:
        """Keep the cause the claim will note: an upstream change over a refresh (only it
        owes a follow-up), else the newest."""
        key = (workflow_id, cause.partition)
        current = self.coalesce.get(key)
        if current is None or (_upstream(cause), _moment(cause)) > (
            _upstream(current),
            _moment(current),
        ):
            self.coalesce[key] = cause

    def owe(self, cause: Cause, workflow_id: str) -> None:
        key = (workflow_id, cause.partition)
        self.owed[key] = merge_pending(self.owed.get(key), cause.pending())


def _moment(cause: Cause) -> datetime:
    return cause.produced_at or datetime.min.replace(tzinfo=UTC)


async def apply_decisions(
    connection: AsyncConnection,
    planned: Sequence[Planned],
    policies: Mapping[str, Policy],
    now: datetime,
) -> Applied:
    """Record each decision once and do what it says; returns what to announce after commit.

    Coalesces and deferrals of one (workflow, partition) are written once, with the newest.
    """
    chosen = [
        (c, d, new_id() if d.launches else None) for c, d in planned if d.workflow_id in policies
    ]
    rows = [_row(c, d, policies[d.workflow_id], run_id, now) for c, d, run_id in chosen]
    new = await mat_store.record_decisions(connection, rows)
    writes = _Writes()
    for cause, decided, run_id in chosen:
        if (cause.event_id, decided.workflow_id, cause.partition) not in new:
            continue  # this event was already decided for this workflow (a redelivery)
        policy = policies[decided.workflow_id]
        writes.record(cause, decided, run_id)
        if decided.outcome == "coalesced":
            writes.ride_along(cause, policy.workflow_id)
        elif decided.outcome == "deferred":
            writes.owe(cause, policy.workflow_id)
        elif run_id is not None:
            await _launch(connection, writes, cause, decided, policy, run_id, now)
    # Rows are touched in key order, so concurrent materializers cannot deadlock on them.
    for (workflow_id, _), cause in sorted(writes.coalesce.items()):
        if not await _coalesce(connection, cause, workflow_id):
            await _decide_again(connection, writes, cause, policies[workflow_id], now)
    for (workflow_id, partition), work in sorted(writes.owed.items()):
        await owe(connection, workflow_id, partition, work, now)
    recorded = list(writes.recorded.values())
    await metric_store.record_decisions(
        connection,
        [(d.outcome, d.reason) for d, _, _ in recorded],
        [_reaction_ms(c, now) for d, c, _ in recorded if d.launches and _upstream(c)],
        now,
    )
    return Applied(writes.launched, recorded)


def _upstream(cause: Cause) -> bool:
    """An upstream change (not a refresh): its run follows a production elsewhere."""
    return cause.produced_at is not None and cause.reason in ("upstream-update", FOLLOW_UP)


def _reaction_ms(cause: Cause, now: datetime) -> float:
    assert cause.produced_at is not None
    return (now - cause.produced_at).total_seconds() * 1000


def target_key(cause: Cause, policy: Policy) -> str:
    return cause.asset_key or policy.target or ""


def _row(
    cause: Cause, chosen: Decision, policy: Policy, run_id: str | None, now: datetime
) -> dict[str, Any]:
    key = target_key(cause, policy)
    upstream = (cause.upstream or {}).get("assetId")
    return {
        "event_id": cause.event_id,
        "event_type": cause.event_type,
        "workflow_definition_id": chosen.workflow_id,
        "workflow_slug": chosen.workflow_slug,
        "asset_id": policy.asset_id(key),
        "asset_key": key,
        "upstream_asset_id": str(upstream)[:200] if upstream else None,
        "partition_key": cause.partition,
        "outcome": chosen.outcome,
        "reason": chosen.reason,
        "workflow_run_id": run_id,
        "at": now,
    }


async def _launch(
    connection: AsyncConnection,
    writes: _Writes,
    cause: Cause,
    decided: Decision,
    policy: Policy,
    run_id: str,
    now: datetime,
) -> None:
    """Claim and insert the run; a lost claim rides along with the winner's run instead."""
    try:
        run = await _insert_run(connection, cause, policy, run_id, now)
    except DefinitionError as error:
        reason = (
            "invalid-partition" if error.reason == "invalid_partition" else "invalid-parameters"
        )
        writes.record(cause, await _amend(connection, cause, decision(policy, "skipped", reason)))
        return
    if run is not None:
        writes.launched.append((run, decided.priority))
        return
    # Another materializer launched it first: this event rides along with that run.
    writes.record(
        cause, await _amend(connection, cause, decision(policy, "coalesced", "in-flight"))
    )
    writes.ride_along(cause, policy.workflow_id)


async def _decide_again(
    connection: AsyncConnection, writes: _Writes, cause: Cause, policy: Policy, now: datetime
) -> None:
    """The run we coalesced into ended meanwhile: launch now, unless its end started a
    cooldown (then the work is owed)."""
    cooling = await mat_store.cooldown(connection, policy.workflow_id, cause.partition)
    if cooling is not None and cooling.next_eligible_at and cooling.next_eligible_at > now:
        writes.record(
            cause, await _amend(connection, cause, decision(policy, "deferred", "cooldown"))
        )
        writes.owe(cause, policy.workflow_id)
        return
    run_id = new_id()
    launched = decision(policy, "launched", cause.reason)
    before = len(writes.launched)
    await _launch(connection, writes, cause, launched, policy, run_id, now)
    if len(writes.launched) > before:
        writes.record(cause, await _amend(connection, cause, launched, run_id), run_id)


async def _amend(
    connection: AsyncConnection, cause: Cause, final: Decision, run_id: str | None = None
) -> Decision:
    await mat_store.change_decision(
        connection,
        cause.event_id,
        final.workflow_id,
        cause.partition,
        {"outcome": final.outcome, "reason": final.reason, "workflow_run_id": run_id},
    )
    return final


async def _coalesce(connection: AsyncConnection, cause: Cause, workflow_id: str) -> bool:
    """Note an upstream change on the in-flight run's claim; False when there is no claim.

    Only upstream changes owe a follow-up: a refresh is done by the run in flight itself.
    """
    if not _upstream(cause):
        return await mat_store.claim_held(connection, workflow_id, cause.partition)
    assert cause.produced_at is not None
    follow_up = {"eventId": cause.event_id, "upstream": dict(cause.upstream or {})}
    return await mat_store.note_follow_up(
        connection, workflow_id, cause.partition, follow_up, cause.produced_at
    )


async def owe(
    connection: AsyncConnection, workflow_id: str, partition: str, work: Pending, now: datetime
) -> None:
    """Keep work for the end of the (workflow, partition)'s cooldown, merged with what is owed."""
    row = await mat_store.cooldown(connection, workflow_id, partition, lock=True)
    current = Pending.from_json(row.pending) if row is not None and row.pending else None
    await mat_store.set_cooldown(
        connection,
        workflow_id,
        partition,
        failures=row.failures if row is not None else 0,
        until=row.next_eligible_at if row is not None else None,
        pending=merge_pending(current, work).as_json(),
        now=now,
    )


async def _insert_run(
    connection: AsyncConnection, cause: Cause, policy: Policy, run_id: str, now: datetime
) -> WorkflowRun | None:
    """Claim (workflow, partition) and insert its run; None when the claim is taken."""
    workflow = await workflow_store.get_workflow_by_id(connection, policy.workflow_id)
    if workflow is None:
        return None
    key = target_key(cause, policy)
    stored = None
    if cause.partition_key is not None:
        by_partition = await asset_store.partition_parameters(connection, workflow.id, key)
        stored = by_partition.get(cause.partition)
    parameters = launch_parameters(workflow.default_parameters, policy, stored, cause.partition_key)
    request = WorkflowRunRequest.model_validate(
        {
            "parameters": parameters,
            "triggeredBy": TRIGGERED_BY,
            "trigger": cause.trigger(policy.asset_id(key)),
            "partitionKey": cause.partition_key,
        }
    )
    values = workflow_run_values(workflow, request, run_id)
    claim = {
        "workflow_definition_id": workflow.id,
        "partition_key": cause.partition,
        "workflow_run_id": run_id,
        "reason": cause.reason,
        "cause": cause.pending().as_json(),
        "claimed_at": now,
        "follow_up": None,
        "follow_up_at": None,
    }
    if not await mat_store.take_claim(connection, claim):
        return None
    await run_store.insert_workflow_run(connection, values)
    return pending_run(values, workflow.slug)


def cause_of_pending(
    pending: Pending, event_id: str, event_type: str, partition_key: str | None
) -> Cause:
    """The cause a cooldown's owed work launches with: the original one, under a new event."""
    original = Cause.from_json(pending.cause) if pending.cause else None
    if original is None:
        return Cause(event_id, event_type, pending.reason, partition_key, pending.produced_at)
    return replace(
        original,
        event_id=event_id,
        event_type=event_type,
        reason=pending.reason,
        produced_at=pending.produced_at,
    )
