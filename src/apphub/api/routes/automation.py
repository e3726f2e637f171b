"""Why something did or did not auto-materialize: a workflow's and an asset's automation state.

Every answer is read from the materializer's rows (decisions, claims, cooldowns, timers), so
any API process answers the same however many materializers run.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.api.schemas import BAD_INPUT, NOT_FOUND, Data
from apphub.api.state import Db
from apphub.automation.auto_runs import TRIGGERED_BY
from apphub.automation.freshness import EXPIRY
from apphub.domain.asset_graph import Policy, policy_of
from apphub.domain.assets import asset_key
from apphub.domain.base import ApiModel, JsonObject, UtcTime
from apphub.domain.errors import NotFoundError
from apphub.domain.materialize import EXPLANATIONS, Outcome, follow_up_owed
from apphub.domain.runs import WorkflowRun
from apphub.store import assets as asset_store
from apphub.store import materializer as mat_store
from apphub.store import timers as timer_store
from apphub.store import workflow_runs as run_store
from apphub.store import workflows as workflow_store

router = APIRouter(tags=["automation"])

Limit = Annotated[int, Query(ge=1, le=200)]
RECENT_RUNS = 10


class AutomationDecision(ApiModel):
    id: int
    at: UtcTime
    event_id: str
    event_type: str
    workflow_slug: str
    asset_id: str
    upstream_asset_id: str | None
    partition_key: str | None
    outcome: Outcome
    reason: str
    explanation: str
    run_id: str | None


class InFlight(ApiModel):
    partition_key: str | None
    run_id: str
    reason: str
    claimed_at: UtcTime
    follow_up_owed: bool
    """An upstream change arrived after the run was claimed: one more run follows it."""


class Cooldown(ApiModel):
    failures: int
    next_eligible_at: UtcTime | None


class PartitionCooldown(Cooldown):
    partition_key: str | None
    owed: JsonObject | None
    """The work that runs when the cooldown ends (`reason`, `producedAt`)."""


class Expiry(ApiModel):
    workflow_slug: str | None
    asset_id: str
    partition_key: str | None
    reason: str
    due_at: UtcTime
    produced_at: str


class PolicyView(ApiModel):
    workflow_slug: str
    has_block: bool
    enabled: bool
    on_upstream_update: bool
    priority: int
    consumes: list[str]
    produces: list[str]
    expiring: list[str]


class WorkflowAutomation(ApiModel):
    workflow_slug: str
    policy: PolicyView | None
    runs: list[WorkflowRun]
    in_flight: list[InFlight]
    cooldown: Cooldown
    cooldowns: list[PartitionCooldown]
    decisions: list[AutomationDecision]
    next_expiries: list[Expiry]


class AssetAutomation(ApiModel):
    asset_id: str
    producers: list[PolicyView]
    decisions: list[AutomationDecision]
    next_expiries: list[Expiry]


@router.get(
    "/workflows/{slug}/auto-materialize",
    response_model=Data[WorkflowAutomation],
    responses=BAD_INPUT | NOT_FOUND,
)
async def workflow_automation(slug: str, database: Db, limit: Limit = 50) -> dict[str, Any]:
    """The workflow's policy, auto runs, in-flight claims, cooldown, decisions, expiries."""
    async with database.read() as connection:
        workflow = await workflow_store.get_workflow(connection, slug)
        if workflow is None:
            raise NotFoundError("workflow not found")
        policy = await _policy(connection, workflow.id)
        runs = await run_store.list_workflow_runs(
            connection,
            workflow_definition_id=workflow.id,
            triggered_by=TRIGGERED_BY,
            limit=RECENT_RUNS,
        )
        claims = await mat_store.claims_of(connection, workflow.id)
        cooldowns = await mat_store.cooldowns_of(connection, workflow.id)
        decisions = await mat_store.recent_decisions(
            connection, workflow_ids=[workflow.id], limit=limit
        )
        timers = await timer_store.list_timers(connection, EXPIRY, [f"{workflow.id}:"])
    return {
        "data": {
            "workflowSlug": workflow.slug,
            "policy": _policy_view(policy) if policy else None,
            "runs": runs,
            "inFlight": [_in_flight(claim) for claim in claims],
            "cooldown": _summary(cooldowns),
            "cooldowns": [_cooldown(row) for row in cooldowns],
            "decisions": [_decision(row) for row in decisions],
            "nextExpiries": [_expiry(timer) for timer in timers],
        }
    }


@router.get(
    "/assets/{asset_id}/automation",
    response_model=Data[AssetAutomation],
    responses=BAD_INPUT | NOT_FOUND,
)
async def asset_automation(asset_id: str, database: Db, limit: Limit = 50) -> dict[str, Any]:
    """Recent decisions about materializing the asset, newest first: why it ran or did not."""
    key = asset_key(asset_id)
    async with database.read() as connection:
        rows = await asset_store.declarations(connection, [key])
        if not rows:
            raise NotFoundError("asset not found")
        producers = sorted(
            {row.workflow_definition_id for row in rows if row.direction == "produces"}
        )
        policies = [p for p in [await _policy(connection, w) for w in producers] if p]
        decisions = await mat_store.recent_decisions(
            connection, workflow_ids=producers, asset_key=key, limit=limit
        )
        timers = await timer_store.list_timers(
            connection, EXPIRY, [f"{workflow_id}:{key}:" for workflow_id in producers]
        )
    return {
        "data": {
            "assetId": rows[0].asset_id,
            "producers": [_policy_view(policy) for policy in policies],
            "decisions": [_decision(row) for row in decisions],
            "nextExpiries": [_expiry(timer) for timer in timers],
        }
    }


async def _policy(connection: AsyncConnection, workflow_id: str) -> Policy | None:
    declarations = await asset_store.graph_declarations(connection, workflow_id=workflow_id)
    return policy_of(workflow_id, declarations) if declarations else None


def _policy_view(policy: Policy) -> dict[str, Any]:
    return {
        "workflowSlug": policy.workflow_slug,
        "hasBlock": policy.has_block,
        "enabled": policy.enabled,
        "onUpstreamUpdate": policy.on_upstream_update,
        "priority": policy.priority,
        "consumes": sorted(policy.consumes),
        "produces": sorted(policy.asset_id(key) for key in policy.produces),
        "expiring": sorted(policy.asset_id(key) for key in policy.expiring),
    }


def _decision(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at,
        "eventId": row.event_id,
        "eventType": row.event_type,
        "workflowSlug": row.workflow_slug,
        "assetId": row.asset_id,
        "upstreamAssetId": row.upstream_asset_id,
        "partitionKey": asset_store.served_partition(row.partition_key),
        "outcome": row.outcome,
        "reason": row.reason,
        "explanation": EXPLANATIONS.get(row.reason, row.reason),
        "runId": row.workflow_run_id,
    }


def _in_flight(claim: Any) -> dict[str, Any]:
    return {
        "partitionKey": asset_store.served_partition(claim.partition_key),
        "runId": claim.workflow_run_id,
        "reason": claim.reason,
        "claimedAt": claim.claimed_at,
        "followUpOwed": follow_up_owed(claim.follow_up_at, claim.run_started_at),
    }


def _cooldown(row: Any) -> dict[str, Any]:
    owed = row.pending
    return {
        "partitionKey": asset_store.served_partition(row.partition_key),
        "failures": row.failures,
        "nextEligibleAt": row.next_eligible_at,
        "owed": {"reason": owed["reason"], "producedAt": owed.get("producedAt")} if owed else None,
    }


def _summary(rows: list[Any]) -> dict[str, Any]:
    """One figure for the workflow: the most failures, the latest end of a cooldown."""
    ends = [row.next_eligible_at for row in rows if row.next_eligible_at is not None]
    return {
        "failures": max((row.failures for row in rows), default=0),
        "nextEligibleAt": max(ends) if ends else None,
    }


def _expiry(timer: Any) -> dict[str, Any]:
    payload = timer.payload
    return {
        "workflowSlug": payload.get("workflowSlug"),
        "assetId": payload["assetId"],
        "partitionKey": payload.get("partitionKey"),
        "reason": payload["reason"],
        "dueAt": timer.due_at,
        "producedAt": payload["producedAt"],
    }
