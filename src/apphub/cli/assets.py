"""`apphub assets …`: which assets workflows produce and consume, their history and lineage."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

from apphub.cli.client import api_client
from apphub.cli.output import (
    JsonOption,
    Row,
    console,
    field,
    payload_cell,
    print_json,
    print_rows,
    table_of,
    text,
)

assets = typer.Typer(
    help="Assets: what workflows produce and consume, and their history.", no_args_is_help=True
)


def _steps(refs: list[dict[str, Any]]) -> str:
    """Step ids within one workflow, as the per-workflow view names them."""
    return ", ".join(ref["stepId"] for ref in refs)


def _who(refs: list[dict[str, Any]]) -> str:
    """`workflow/step` pairs, as the graph names them across workflows."""
    return ", ".join(f"{ref['workflowSlug']}/{ref['stepId']}" for ref in refs)


@assets.command("list")
def list_assets(
    workflow: Annotated[
        str | None, typer.Option(help="Only this workflow's assets (with their latest).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List assets: one workflow's, or every declared asset across workflows."""
    client = api_client()
    if workflow:
        rows = client.get(f"/workflows/{workflow}/assets")
        print_rows(rows, WORKFLOW_ASSET_COLUMNS, as_json=as_json)
        return
    graph = client.get("/assets/graph")
    print_rows(graph["assets"], GRAPH_ASSET_COLUMNS, as_json=as_json)


def _latest(asset: Row, name: str) -> str:
    return text((asset["latest"] or {}).get(name))


def _newest_production(asset: Row) -> str:
    latest = asset["latestMaterializations"]
    return text(latest[0]["producedAt"] if latest else None)


WORKFLOW_ASSET_COLUMNS = [
    ("asset", field("assetId")),
    ("producers", lambda asset: _steps(asset["producers"])),
    ("consumers", lambda asset: _steps(asset["consumers"])),
    ("available", field("available")),
    ("latest produced at", lambda asset: _latest(asset, "producedAt")),
    ("latest partition", lambda asset: _latest(asset, "partitionKey")),
]
GRAPH_ASSET_COLUMNS = [
    ("asset", field("assetId")),
    ("producers", lambda asset: _who(asset["producers"])),
    ("consumers", lambda asset: _who(asset["consumers"])),
    ("latest materialization", _newest_production),
    ("stale", field("hasStalePartitions")),
    ("outdated upstreams", lambda asset: ", ".join(asset["outdatedUpstreamAssetIds"])),
]


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
    rows = api_client().get(f"/workflows/{workflow}/assets/{asset}/history", params=query)
    columns = [
        ("produced at", field("producedAt")),
        ("partition", field("partitionKey")),
        ("run id", field("runId")),
        ("step id", field("stepId")),
        ("payload", lambda row: payload_cell(row["payload"])),
    ]
    print_rows(rows, columns, as_json=as_json)


@assets.command("graph")
def asset_graph() -> None:
    """Show the lineage: each workflow, the assets it produces, and who consumes them."""
    graph = api_client().get("/assets/graph")
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
    answer = api_client().get(f"/assets/{asset}/automation", params={"limit": limit})
    if as_json:
        print_json(answer)
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
    columns = [
        ("at", field("at")),
        ("event", field("eventType")),
        ("workflow", field("workflowSlug")),
        ("partition", field("partitionKey")),
        ("outcome", field("outcome")),
        ("reason", field("reason")),
        ("run id", field("runId")),
    ]
    console.print(table_of(decisions, columns))


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
