"""The materializer's asset graph: who produces and consumes each asset, and what each workflow's
auto-materialize policy is (no I/O).

It is built once from every stored declaration, then changed one workflow at a time: a
definition update costs that workflow's declarations, an event costs its asset's consumers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Declaration:
    """One row of `workflow_asset_declarations`, with its workflow's slug."""

    workflow_id: str
    workflow_slug: str
    step_id: str
    direction: str
    asset_key: str
    freshness: Mapping[str, Any] | None = None
    auto_materialize: Mapping[str, Any] | None = None
    asset_id: str | None = None
    """The id as the workflow spells it (keys are lowercased); the key when not given."""


@dataclass(frozen=True, slots=True)
class Policy:
    """A workflow's auto-materialize policy, merged over the assets it produces."""

    workflow_id: str
    workflow_slug: str
    produces: frozenset[str]
    consumes: frozenset[str]
    has_block: bool
    enabled: bool
    on_upstream_update: bool
    priority: int
    parameter_defaults: Mapping[str, Any]
    expiring: Mapping[str, Mapping[str, Any]]
    """Produced asset key → its freshness, for assets whose block asks for expiry timers."""
    asset_ids: Mapping[str, str] = field(default_factory=dict)
    """Produced asset key → the id as declared."""
    update_keys: frozenset[str] = frozenset()
    """Produced asset keys whose block has `onUpstreamUpdate`."""
    blocked: frozenset[str] = frozenset()
    """Produced asset keys that carry an `autoMaterialize` block of their own."""

    @property
    def target(self) -> str | None:
        """The asset an upstream-triggered run is said to materialize (trigger.assetId).

        The first produced asset whose block has `onUpstreamUpdate`, else the first produced.
        """
        return min(self.update_keys or self.produces, default=None)

    def asset_id(self, key: str) -> str:
        return self.asset_ids.get(key, key)


@dataclass
class AssetGraph:
    """Who produces and consumes each asset; looked up per event, so work is per consumer."""

    policies: dict[str, Policy] = field(default_factory=dict)
    consumers: dict[str, list[str]] = field(default_factory=dict)
    producers: dict[str, list[str]] = field(default_factory=dict)

    def consumers_of(self, asset_key: str) -> list[Policy]:
        return [self.policies[w] for w in self.consumers.get(asset_key, ())]

    def producers_of(self, asset_key: str) -> list[Policy]:
        return [self.policies[w] for w in self.producers.get(asset_key, ())]

    def replace_workflow(self, workflow_id: str, declarations: Sequence[Declaration]) -> None:
        """Put one workflow's current declarations in place of what the graph knew of it."""
        self.remove_workflow(workflow_id)
        if declarations:
            self._add(policy_of(workflow_id, declarations))

    def remove_workflow(self, workflow_id: str) -> None:
        old = self.policies.pop(workflow_id, None)
        if old is None:
            return
        for index, keys in ((self.consumers, old.consumes), (self.producers, old.produces)):
            for key in keys:
                ids = index.get(key, [])
                if workflow_id in ids:
                    ids.remove(workflow_id)
                if not ids:
                    index.pop(key, None)

    def _add(self, policy: Policy) -> None:
        self.policies[policy.workflow_id] = policy
        for key in sorted(policy.consumes):
            self.consumers.setdefault(key, []).append(policy.workflow_id)
        for key in sorted(policy.produces):
            self.producers.setdefault(key, []).append(policy.workflow_id)


def build_graph(declarations: Iterable[Declaration]) -> AssetGraph:
    """O(declarations): group by workflow, merge each workflow's produced-asset policies."""
    by_workflow: dict[str, list[Declaration]] = {}
    for declaration in declarations:
        by_workflow.setdefault(declaration.workflow_id, []).append(declaration)
    graph = AssetGraph()
    for workflow_id, rows in by_workflow.items():
        graph._add(policy_of(workflow_id, rows))
    return graph


def policy_of(workflow_id: str, rows: Sequence[Declaration]) -> Policy:
    """Blocks merge: enabled only if every block is, the lowest priority, defaults in order."""
    produced = [row for row in rows if row.direction == "produces"]
    blocks = [row.auto_materialize for row in produced if row.auto_materialize is not None]
    defaults: dict[str, Any] = {}
    for block in blocks:
        defaults.update(block.get("parameterDefaults") or {})
    priorities = [b["priority"] for b in blocks if isinstance(b.get("priority"), int)]
    return Policy(
        workflow_id=workflow_id,
        workflow_slug=rows[0].workflow_slug,
        produces=frozenset(row.asset_key for row in produced),
        consumes=frozenset(row.asset_key for row in rows if row.direction == "consumes"),
        has_block=bool(blocks),
        enabled=bool(blocks) and all(b.get("enabled", True) for b in blocks),
        on_upstream_update=any(b.get("onUpstreamUpdate") for b in blocks),
        priority=min(priorities) if priorities else 0,
        parameter_defaults=defaults,
        expiring={
            row.asset_key: row.freshness for row in produced if row.freshness and _expires(row)
        },
        asset_ids={row.asset_key: row.asset_id or row.asset_key for row in produced},
        update_keys=frozenset(
            row.asset_key
            for row in produced
            if row.auto_materialize is not None and row.auto_materialize.get("onUpstreamUpdate")
        ),
        blocked=frozenset(row.asset_key for row in produced if row.auto_materialize is not None),
    )


def _expires(row: Declaration) -> bool:
    """A produced asset sets expiry timers when its block is on and it has a ttl or cadence."""
    block, freshness = row.auto_materialize, row.freshness or {}
    windows = freshness.get("ttlMs") or freshness.get("cadenceMs")
    return block is not None and bool(block.get("enabled", True)) and bool(windows)
