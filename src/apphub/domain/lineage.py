"""The asset graph across workflows: producers, consumers, staleness, outdated upstreams.

An asset B (produced by workflow W) has an outdated upstream A when W consumes A and A was
produced after W's latest production of B for the same partition, or B never was. An
unpartitioned production of B counts for every partition. Staleness is a stale mark, or a
freshness window (`maxAgeMs`, `ttlMs`, `cadenceMs`, the shortest given) that has passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apphub.domain.base import iso_ms


@dataclass(frozen=True, slots=True)
class Declared:
    workflow_slug: str
    step_id: str
    direction: str
    asset_id: str
    asset_key: str
    freshness: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest production of an asset by one workflow for one partition ('' = none)."""

    workflow_slug: str
    asset_key: str
    partition_key: str
    produced_at: datetime
    run_id: str
    step_id: str


@dataclass(frozen=True, slots=True)
class StaleMark:
    workflow_slug: str
    asset_key: str
    partition_key: str
    requested_at: datetime
    note: str | None = None


def freshness_window(freshness: Mapping[str, Any] | None) -> timedelta | None:
    windows = [freshness.get(k) for k in ("maxAgeMs", "ttlMs", "cadenceMs")] if freshness else []
    given = [int(w) for w in windows if w]
    return timedelta(milliseconds=min(given)) if given else None


def expired(freshness: Mapping[str, Any] | None, produced_at: datetime, now: datetime) -> bool:
    window = freshness_window(freshness)
    return window is not None and now - produced_at > window


@dataclass
class _Asset:
    asset_id: str
    producers: list[Declared] = field(default_factory=list)
    consumers: list[Declared] = field(default_factory=list)
    latest: list[Latest] = field(default_factory=list)
    marks: list[StaleMark] = field(default_factory=list)


def asset_graph(
    declarations: Iterable[Declared],
    latest: Iterable[Latest],
    marks: Iterable[StaleMark],
    now: datetime,
) -> dict[str, Any]:
    assets = _collect(declarations, latest, marks)
    edges = _edges(assets)
    views = [_view(key, asset, assets, now) for key, asset in sorted(assets.items())]
    return {"assets": views, "edges": edges}


def _collect(
    declarations: Iterable[Declared], latest: Iterable[Latest], marks: Iterable[StaleMark]
) -> dict[str, _Asset]:
    assets: dict[str, _Asset] = {}
    for declared in declarations:
        asset = assets.setdefault(declared.asset_key, _Asset(declared.asset_id))
        if declared.direction == "produces":
            asset.producers.append(declared)
        else:
            asset.consumers.append(declared)
    for production in latest:
        if production.asset_key in assets:
            assets[production.asset_key].latest.append(production)
    for mark in marks:
        if mark.asset_key in assets:
            assets[mark.asset_key].marks.append(mark)
    return assets


def _edges(assets: Mapping[str, _Asset]) -> list[dict[str, str]]:
    consumed_by: dict[str, set[str]] = {}
    for key, asset in assets.items():
        for consumer in asset.consumers:
            consumed_by.setdefault(consumer.workflow_slug, set()).add(key)
    edges = []
    for key, asset in sorted(assets.items()):
        for workflow in sorted({p.workflow_slug for p in asset.producers}):
            for upstream in sorted(consumed_by.get(workflow, ())):
                if upstream != key:
                    edges.append(
                        {
                            "from": assets[upstream].asset_id,
                            "to": asset.asset_id,
                            "workflowSlug": workflow,
                        }
                    )
    return edges


def _view(key: str, asset: _Asset, assets: Mapping[str, _Asset], now: datetime) -> dict[str, Any]:
    stale = _stale_partitions(asset, now)
    outdated = outdated_upstreams(key, assets)
    return {
        "assetId": asset.asset_id,
        "producers": [_who(d) for d in asset.producers],
        "consumers": [_who(d) for d in asset.consumers],
        "latestMaterializations": [
            {
                "workflowSlug": p.workflow_slug,
                "runId": p.run_id,
                "stepId": p.step_id,
                "partitionKey": p.partition_key or None,
                "producedAt": iso_ms(p.produced_at),
            }
            for p in sorted(asset.latest, key=lambda p: p.produced_at, reverse=True)
        ],
        "stalePartitions": stale,
        "hasStalePartitions": bool(stale),
        "hasOutdatedUpstreams": bool(outdated),
        "outdatedUpstreamAssetIds": [assets[upstream].asset_id for upstream in outdated],
    }


def _who(declared: Declared) -> dict[str, str]:
    return {"workflowSlug": declared.workflow_slug, "stepId": declared.step_id}


def _stale_partitions(asset: _Asset, now: datetime) -> list[dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for mark in asset.marks:
        found[(mark.workflow_slug, mark.partition_key)] = {
            "workflowSlug": mark.workflow_slug,
            "partitionKey": mark.partition_key or None,
            "reason": "marked",
            "since": iso_ms(mark.requested_at),
            "note": mark.note,
        }
    freshness = {d.workflow_slug: d.freshness for d in asset.producers}
    for production in asset.latest:
        window = freshness_window(freshness.get(production.workflow_slug))
        identity = (production.workflow_slug, production.partition_key)
        if window and now - production.produced_at > window and identity not in found:
            found[identity] = {
                "workflowSlug": production.workflow_slug,
                "partitionKey": production.partition_key or None,
                "reason": "expired",
                "since": iso_ms(production.produced_at + window),
                "note": None,
            }
    return list(found.values())


def outdated_upstreams(key: str, assets: Mapping[str, _Asset]) -> list[str]:
    """Upstream asset keys produced after this asset's latest production (same partition)."""
    asset = assets[key]
    producers = {p.workflow_slug for p in asset.producers}
    upstream_keys = sorted(
        {
            other
            for other, candidate in assets.items()
            if other != key and any(c.workflow_slug in producers for c in candidate.consumers)
        }
    )
    mine = newest_by_partition(asset.latest)
    return [up for up in upstream_keys if _is_newer(newest_by_partition(assets[up].latest), mine)]


def newest_by_partition(latest: Sequence[Latest]) -> dict[str, datetime]:
    newest: dict[str, datetime] = {}
    for production in latest:
        current = newest.get(production.partition_key)
        if current is None or production.produced_at > current:
            newest[production.partition_key] = production.produced_at
    return newest


def _is_newer(upstream: Mapping[str, datetime], downstream: Mapping[str, datetime]) -> bool:
    for partition, produced_at in upstream.items():
        mine = downstream.get(partition) or downstream.get("")
        if partition == "" and downstream:
            mine = max(downstream.values())
        if mine is None or produced_at > mine:
            return True
    return False
