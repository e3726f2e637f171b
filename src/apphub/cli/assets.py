"""`apphub assets …`: which assets workflows produce and consume, their history and lineage."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from apphub.cli.client import ApiClient
from apphub.settings import Settings

assets = typer.Typer(
    help="Assets: what workflows produce and consume, and their history.", no_args_is_help=True
)
console = Console()

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
PAYLOAD_WIDTH = 60


def _client() -> ApiClient:
    return ApiClient.from_env(Settings.from_env())


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value))


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def _steps(refs: list[dict[str, Any]]) -> str:
    """Step ids within one workflow, as the per-workflow view names them."""
    return ", ".join(ref["stepId"] for ref in refs)


def _who(refs: list[dict[str, Any]]) -> str:
    """`workflow/step` pairs, as the graph names them across workflows."""
    return ", ".join(f"{ref['workflowSlug']}/{ref['stepId']}" for ref in refs)


def _payload(payload: Any) -> str:
    """Compact JSON, cut so a row stays on one line; escaped so brackets are not markup."""
    text = json.dumps(payload, separators=(",", ":"), default=str)
    if len(text) > PAYLOAD_WIDTH:
        text = text[: PAYLOAD_WIDTH - 1] + "…"
    return escape(text)


@assets.command("list")
def list_assets(
    workflow: Annotated[
        str | None, typer.Option(help="Only this workflow's assets (with their latest).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List assets: one workflow's, or every declared asset across workflows."""
    client = _client()
    if workflow:
        rows = client.get(f"/workflows/{workflow}/assets")
        if as_json:
            _print_json(rows)
            return
        table = Table(
            "asset", "producers", "consumers", "available", "latest produced at", "latest partition"
        )
        for asset in rows:
            latest = asset["latest"] or {}
            table.add_row(
                asset["assetId"],
                _steps(asset["producers"]),
                _steps(asset["consumers"]),
                _yes(asset["available"]),
                latest.get("producedAt") or "",
                escape(latest.get("partitionKey") or ""),
            )
        console.print(table)
        return
    graph = client.get("/assets/graph")
    if as_json:
        _print_json(graph["assets"])
        return
    table = Table(
        "asset", "producers", "consumers", "latest materialization", "stale", "outdated upstreams"
    )
    for asset in graph["assets"]:
        latest = asset["latestMaterializations"]
        table.add_row(
            asset["assetId"],
            _who(asset["producers"]),
            _who(asset["consumers"]),
            latest[0]["producedAt"] if latest else "",
            _yes(asset["hasStalePartitions"]),
            ", ".join(asset["outdatedUpstreamAssetIds"]),
        )
    console.print(table)


@assets.command("history")
def asset_history(
    workflow: str,
    asset: str,
    limit: Annotated[int, typer.Option(help="How many (newest first).")] = 10,
    partition: Annotated[str | None, typer.Option(help="Only this partition key.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show an asset's materializations by one workflow, newest first."""
    query: dict[str, Any] = {"limit": limit}
    if partition is not None:
        query["partitionKey"] = partition
    rows = _client().get(f"/workflows/{workflow}/assets/{asset}/history", params=query)
    if as_json:
        _print_json(rows)
        return
    table = Table("produced at", "partition", "run id", "step id", "payload")
    for row in rows:
        table.add_row(
            row["producedAt"],
            escape(row["partitionKey"] or ""),
            row["runId"],
            row["stepId"],
            _payload(row["payload"]),
        )
    console.print(table)


@assets.command("graph")
def asset_graph() -> None:
    """Show the lineage: each workflow, the assets it produces, and who consumes them."""
    graph = _client().get("/assets/graph")
    if not graph["assets"]:
        console.print("no assets declared yet")
        return
    by_workflow: dict[str, list[dict[str, Any]]] = {}
    orphans: list[dict[str, Any]] = []
    for asset in graph["assets"]:
        producing = sorted({ref["workflowSlug"] for ref in asset["producers"]})
        for slug in producing:
            by_workflow.setdefault(slug, []).append(asset)
        if not producing:
            orphans.append(asset)
    tree = Tree(Text("assets", style="bold"))
    for slug in sorted(by_workflow):
        _add_assets(tree.add(Text(f"workflow {slug}", style="bold")), by_workflow[slug])
    if orphans:
        _add_assets(tree.add(Text("(no producer)", style="dim")), orphans)
    console.print(tree)


def _add_assets(node: Tree, produced: list[dict[str, Any]]) -> None:
    """Plain `Text` labels: the ` [stale]` marks would otherwise be read as rich markup."""
    for asset in produced:
        label = Text(f"asset {asset['assetId']}")
        if asset["hasStalePartitions"]:
            label.append(" [stale]", style="yellow")
        if asset["outdatedUpstreamAssetIds"]:
            outdated = ", ".join(asset["outdatedUpstreamAssetIds"])
            label.append(f" [outdated: {outdated}]", style="magenta")
        branch = node.add(label)
        for consumer in asset["consumers"]:
            branch.add(Text(f"→ {consumer['workflowSlug']}/{consumer['stepId']}"))


@assets.command("why")
def why(
    asset: str,
    limit: Annotated[int, typer.Option(help="How many decisions (newest first).")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Why an asset was (or was not) auto-materialized: its producers' policies, the
    materializer's recent decisions about it, and its next freshness expiries."""
    answer = _client().get(f"/assets/{asset}/automation", params={"limit": limit})
    if as_json:
        _print_json(answer)
        return
    console.print(Text(f"asset {answer['assetId']}", style="bold"))
    for policy in answer["producers"]:
        console.print(f"  produced by {escape(policy['workflowSlug'])}: {_policy(policy)}")
    for expiry in answer["nextExpiries"]:
        console.print(
            f"  next {expiry['reason']} expiry at {expiry['dueAt']}"
            + escape(_partition(expiry["partitionKey"]))
        )
    decisions = answer["decisions"]
    if not decisions:
        console.print("  no decisions yet: no event concerning it has reached the materializer")
        return
    newest = decisions[0]
    console.print(
        f"  newest decision: {newest['outcome']} ({newest['reason']}): "
        f"{escape(newest['explanation'])}"
    )
    table = Table("at", "event", "workflow", "partition", "outcome", "reason", "run id")
    for row in decisions:
        table.add_row(
            row["at"],
            row["eventType"],
            row["workflowSlug"],
            escape(row["partitionKey"] or ""),
            row["outcome"],
            row["reason"],
            row["runId"] or "",
        )
    console.print(table)


def _policy(policy: dict[str, Any]) -> str:
    if not policy["hasBlock"]:
        return "no autoMaterialize block (the materializer leaves it alone)"
    if not policy["enabled"]:
        return "autoMaterialize disabled"
    parts = ["on upstream update" if policy["onUpstreamUpdate"] else "no upstream trigger"]
    if policy["expiring"]:
        parts.append("expires: " + ", ".join(policy["expiring"]))
    parts.append(f"priority {policy['priority']}")
    return "; ".join(parts)


def _partition(key: str | None) -> str:
    return f" (partition {key})" if key else ""
