"""What an `asset.produced` event means to the materializer: the upstream change it reports,
and the freshness timers it sets; and the `asset.expired` a fired timer publishes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apphub.automation.auto_runs import Cause
from apphub.domain.asset_graph import AssetGraph
from apphub.domain.assets import asset_key
from apphub.domain.base import iso_ms, parse_iso
from apphub.domain.events import EventEnvelope
from apphub.domain.materialize import Produced, expiry_due
from apphub.store import assets as asset_store

EXPIRY = "asset.expiry"
"""The kind of the durable timer of a freshness window."""
SOURCE = "apphub.materializer"


@dataclass(frozen=True)
class UpstreamChange:
    """An `asset.produced` event read: what the rules take, and what its runs' triggers say."""

    produced: Produced
    cause: Cause


def upstream_change(event: Any) -> UpstreamChange | None:
    """None for a payload without a usable assetId and producedAt (nothing to decide)."""
    payload = event.payload
    try:
        key, produced_at = asset_key(str(payload["assetId"])), parse_iso(payload["producedAt"])
    except (KeyError, TypeError, ValueError):
        return None
    producer_id = payload.get("workflowDefinitionId")
    partition_key = payload.get("partitionKey") or None
    upstream = {
        "assetId": payload["assetId"],
        "workflowId": producer_id,
        "runId": payload.get("workflowRunId"),
        "partitionKey": partition_key,
    }
    cause = Cause(
        event.id, event.type, "upstream-update", partition_key, produced_at, upstream=upstream
    )
    produced = Produced(key, producer_id, produced_at, asset_store.stored_partition(partition_key))
    return UpstreamChange(produced, cause)


@dataclass(frozen=True)
class ExpiryTimer:
    """A freshness timer to set: when it fires, the production it follows, what it says."""

    due: datetime
    as_of: datetime
    payload: dict[str, Any]


def expiry_timers(graph: AssetGraph, changes: Sequence[UpstreamChange]) -> dict[str, ExpiryTimer]:
    """The freshness timers these productions set (only with an autoMaterialize block).

    Keyed by (workflow, asset, partition, reason): a newer production moves the timer, an
    older one (a replay, a backfill) leaves it where it is.
    """
    timers: dict[str, ExpiryTimer] = {}
    for change in changes:
        produced = change.produced
        policy = graph.policies.get(produced.producer_id or "")
        freshness = policy.expiring.get(produced.asset_key) if policy else None
        if policy is None or not freshness:
            continue
        for reason, due in expiry_due(freshness, produced.produced_at):
            key = f"{policy.workflow_id}:{produced.asset_key}:{produced.partition}:{reason}"
            if key in timers and timers[key].as_of > produced.produced_at:
                continue
            payload = {
                "assetId": policy.asset_id(produced.asset_key),
                "workflowDefinitionId": policy.workflow_id,
                "workflowSlug": policy.workflow_slug,
                "partitionKey": change.cause.partition_key,
                "producedAt": iso_ms(produced.produced_at),
                "freshness": dict(freshness),
                "reason": reason,
            }
            timers[key] = ExpiryTimer(due, produced.produced_at, payload)
    return timers


def expired_event(payload: dict[str, Any]) -> EventEnvelope:
    """`asset.expired` for a fired timer; its id is the same however often the timer fires."""
    key = asset_key(payload["assetId"])
    partition = asset_store.stored_partition(payload.get("partitionKey"))
    identity = f"{payload['workflowDefinitionId']}:{key}:{partition}:{payload['reason']}"
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{identity}:{payload['producedAt']}"))
    return EventEnvelope.model_validate(
        {"id": event_id, "type": "asset.expired", "source": SOURCE, "payload": payload}
    )
