"""Steps that consume an asset nobody has produced yet: they wait, and its producer runs once.

Before a step that consumes assets starts, the driver reads which of them exist (for the
run's partition). A missing one with a producing workflow holds the step (`retryState:
"waiting-for-asset"`, its deadline in `nextAttemptAt`) and starts that workflow once
(`reason: "missing-dependency"`); the producer's transaction wakes the run when the asset
is recorded. With no producer anywhere, or past the deadline, the step fails naming the asset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.automation.auto_runs import TRIGGERED_BY
from apphub.domain.assets import AssetDeclaration, asset_key
from apphub.domain.base import iso_ms, parse_iso
from apphub.domain.errors import ApphubError
from apphub.domain.parameters import merge_parameters
from apphub.domain.planning import Plan
from apphub.domain.requests import WorkflowRunRequest, workflow_run_values
from apphub.domain.workflows import WorkflowDefinition
from apphub.engine.records import StepRecord
from apphub.engine.run_state import WAITING_FOR_ASSET as WAITING
from apphub.engine.run_state import RunState
from apphub.engine.runtimes import JobOutcome
from apphub.store import assets as asset_store
from apphub.store import workflows as workflow_store

DEFAULT_WAIT_MS = 3_600_000
"""How long a step waits for a missing asset when it has no timeout of its own."""


@dataclass(frozen=True)
class Producer:
    workflow: WorkflowDefinition
    auto_materialize: Mapping[str, Any] | None
    partition_parameters: Mapping[str, Any] | None


@dataclass(frozen=True)
class AssetFacts:
    available: set[str]
    producers: dict[str, list[Producer]] = field(default_factory=dict)
    produced_here: set[str] = field(default_factory=set)
    """Missing assets this run's own workflow produces: wait, start nothing."""


def consumed(state: RunState, decision: Plan) -> dict[str, list[AssetDeclaration]]:
    """The steps about to start that consume assets, with what they consume."""
    needs = {}
    for step_id in (*decision.start, *decision.start_children):
        spec, _ = state.spec_of(state.records[step_id])
        consumes = getattr(spec, "consumes", None)
        if consumes:
            needs[step_id] = list(consumes)
    return needs


async def load_facts(
    connection: AsyncConnection,
    state: RunState,
    needs: Mapping[str, Sequence[AssetDeclaration]],
) -> AssetFacts:
    partition = state.partition_key
    keys = sorted({asset_key(d.asset_id) for decls in needs.values() for d in decls})
    available = await asset_store.available_assets(connection, keys, partition)
    missing = [key for key in keys if key not in available]
    if not missing:
        return AssetFacts(available)
    producers: dict[str, list[Producer]] = {}
    produced_here: set[str] = set()
    for row in await asset_store.declarations(connection, missing):
        if row.direction != "produces":
            continue
        if row.workflow_definition_id == state.workflow.id:
            produced_here.add(row.asset_key)
            continue
        workflow = await workflow_store.get_workflow_by_id(connection, row.workflow_definition_id)
        if workflow is None:
            continue
        parameters = await asset_store.partition_parameters(connection, workflow.id, row.asset_key)
        producers.setdefault(row.asset_key, []).append(
            Producer(
                workflow,
                row.auto_materialize,
                parameters.get(asset_store.stored_partition(partition)),
            )
        )
    return AssetFacts(available, producers, produced_here)


def hold(
    state: RunState,
    decision: Plan,
    needs: Mapping[str, Sequence[AssetDeclaration]],
    facts: AssetFacts,
    now: datetime,
) -> Plan:
    """Keep back (or fail) the steps whose consumed assets are missing; the rest may start."""
    held: set[str] = set()
    for step_id, declarations in needs.items():
        record = state.records[step_id]
        missing = [d for d in declarations if asset_key(d.asset_id) not in facts.available]
        if not missing:
            _stop_waiting(record)
            continue
        held.add(step_id)
        problem = _why_not_wait(state, record, missing, facts, now)
        runs: list[dict[str, Any]] = []
        if problem is None:
            runs, problem = _producer_runs(state, record, missing, facts)
        if problem is not None:
            failed = JobOutcome(
                status="failed", error_message=problem, failure_reason="missing-asset"
            )
            state.record(step_id, failed, now)
            continue
        state.change.new_runs += runs
        _wait(state, record, missing, now, requested=[r["asset_key"] for r in runs])
    if not held:
        return decision
    return replace(
        decision,
        start=tuple(s for s in decision.start if s not in held),
        start_children=tuple(s for s in decision.start_children if s not in held),
    )


def _why_not_wait(
    state: RunState,
    record: StepRecord,
    missing: Sequence[AssetDeclaration],
    facts: AssetFacts,
    now: datetime,
) -> str | None:
    for declaration in missing:
        key = asset_key(declaration.asset_id)
        if key not in facts.producers and key not in facts.produced_here:
            return (
                f"step {record.step_id!r} consumes asset {declaration.asset_id!r}, "
                "which no workflow produces"
            )
    deadline = _deadline(state, record, now)
    if now >= deadline:
        names = ", ".join(repr(d.asset_id) for d in missing)
        waited = _started_waiting(record, now)
        seconds = int((now - waited).total_seconds())
        return f"timed out after {seconds}s waiting for asset {names} to be produced"
    return None


def _producer_runs(
    state: RunState,
    record: StepRecord,
    missing: Sequence[AssetDeclaration],
    facts: AssetFacts,
) -> tuple[list[dict[str, Any]], str | None]:
    """Runs to start for missing assets not asked for yet (the first producer of each)."""
    requested = set((record.metrics or {}).get("requestedRuns", []))
    runs = []
    for declaration in missing:
        key = asset_key(declaration.asset_id)
        if key in requested or key not in facts.producers:
            continue
        producer = facts.producers[key][0]
        try:
            values = _producer_run(state, declaration, producer)
        except ApphubError as error:
            return [], (
                f"cannot start {producer.workflow.slug!r} to produce "
                f"{declaration.asset_id!r}: {error.message}"
            )
        runs.append(values | {"asset_key": key, "workflow_slug": producer.workflow.slug})
    return runs, None


def _wait(
    state: RunState,
    record: StepRecord,
    missing: Sequence[AssetDeclaration],
    now: datetime,
    requested: Sequence[str],
) -> None:
    metrics = dict(record.metrics or {})
    asked = [*metrics.get("requestedRuns", []), *requested]
    deadline = _deadline(state, record, now)
    record.status = "pending"
    record.retry_state = WAITING
    record.next_attempt_at = deadline
    record.metrics = metrics | {
        "waitingFor": [d.asset_id for d in missing],
        "waitingSince": iso_ms(_started_waiting(record, now)),
        "waitDeadline": iso_ms(deadline),
        "requestedRuns": asked,
    }
    state.change.step_changed(record)
    partition = asset_store.stored_partition(state.partition_key)
    state.change.waits += [
        {
            "workflow_run_id": state.run_id,
            "workflow_run_step_id": record.row_id,
            "asset_key": asset_key(d.asset_id),
            "partition_key": partition,
            "created_at": now,
        }
        for d in missing
    ]


def _stop_waiting(record: StepRecord) -> None:
    if record.retry_state == WAITING and record.metrics:
        record.metrics = {
            key: value
            for key, value in record.metrics.items()
            if key not in ("waitingFor", "waitDeadline", "waitingSince")
        }
        record.retry_state = None


def _started_waiting(record: StepRecord, now: datetime) -> datetime:
    since = (record.metrics or {}).get("waitingSince")
    return parse_iso(since) if since else now


def _deadline(state: RunState, record: StepRecord, now: datetime) -> datetime:
    stored = (record.metrics or {}).get("waitDeadline")
    if stored:
        return parse_iso(stored)
    spec, _ = state.spec_of(record)
    job = state.launcher.jobs.get(getattr(spec, "job_slug", ""))
    timeout_ms = spec.timeout_ms or (job.timeout_ms if job else None) or DEFAULT_WAIT_MS
    return now + timedelta(milliseconds=timeout_ms)


_RUN_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def _producer_run(
    state: RunState, declaration: AssetDeclaration, producer: Producer
) -> dict[str, Any]:
    """A run of the producing workflow, once per missing asset and partition (its run key).

    Raises when the producer cannot be started (its parameters or partitioning refuse).
    """
    partition = state.partition_key
    key = asset_key(declaration.asset_id)
    run_key = _RUN_KEY_UNSAFE.sub("-", f"missing:{key}" + (f":{partition}" if partition else ""))
    parameters = merge_parameters(
        (producer.auto_materialize or {}).get("parameterDefaults"),
        producer.partition_parameters,
        {"partitionKey": partition} if partition else None,
    )
    trigger = {
        "type": "auto-materialize",
        "reason": "missing-dependency",
        "assetId": declaration.asset_id,
        "partitionKey": partition,
        "requestedBy": {"workflowRunId": state.run_id, "workflowSlug": state.workflow.slug},
    }
    request = WorkflowRunRequest.model_validate(
        {
            "parameters": parameters,
            "triggeredBy": TRIGGERED_BY,
            "trigger": trigger,
            "partitionKey": partition,
            "runKey": run_key[:120],
        }
    )
    return workflow_run_values(producer.workflow, request)
