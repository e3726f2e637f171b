"""Directory insights: scan a tree, report on it in HTML, and archive the report.

Two workflows share one asset: `directory-insights-report` produces
`directory.insights.report`, which `directory-insights-archive` consumes. The asset
materializer keeps them fresh: the archive runs by itself whenever a new report is produced
(`onUpstreamUpdate`), and the report is refreshed once its hourly cadence runs out.
"""

from __future__ import annotations

import html
import os
import tarfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apphub
from apphub.runtime import JobContext

SKIPPED_DIRECTORIES = {"node_modules", "__pycache__"}
REPORT_ASSET = "directory.insights.report"
ARCHIVE_ASSET = "directory.insights.archive"
REPORT_CADENCE_MS = 3_600_000
"""A report older than an hour is produced again (with the workflow's default parameters)."""


def data_dir() -> Path:
    """Where apphub keeps its files; jobs run in the worker, which shares the setting."""
    return Path(os.environ.get("APPHUB_DATA_DIR") or ".apphub")


@apphub.job(
    "scan-directory",
    name="Scan a directory",
    parameters_schema={
        "type": "object",
        "required": ["root"],
        "properties": {
            "root": {"type": "string", "minLength": 1},
            "maxFiles": {"type": "integer", "minimum": 1},
        },
    },
    timeout_ms=300_000,
)
def scan(ctx: JobContext) -> dict[str, Any]:
    """Count files and bytes by file type under `root` (hidden folders left out)."""
    root = Path(ctx.parameters["root"]).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    limit = int(ctx.parameters.get("maxFiles", 200_000))
    by_type: dict[str, dict[str, int]] = defaultdict(lambda: {"files": 0, "bytes": 0})
    files = directories = 0
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [
            name
            for name in subfolders
            if not name.startswith(".") and name not in SKIPPED_DIRECTORIES
        ]
        directories += 1
        for name in names:
            path = Path(folder, name)
            kind = path.suffix.lower() or "(none)"
            by_type[kind]["files"] += 1
            by_type[kind]["bytes"] += _size(path)
            files += 1
            if files >= limit:
                break
        if files >= limit:
            ctx.logger.warning("stopped at maxFiles=%d", limit)
            break
    ctx.logger.info("scanned %d files in %d folders under %s", files, directories, root)
    ranked = sorted(by_type.items(), key=lambda item: item[1]["bytes"], reverse=True)
    return {
        "root": str(root),
        "totals": {
            "files": files,
            "directories": directories,
            "bytes": sum(entry["bytes"] for entry in by_type.values()),
        },
        "byType": [{"type": kind, **counts} for kind, counts in ranked],
    }


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


@apphub.job("render-report", name="Render the insights report")
def render(ctx: JobContext) -> dict[str, Any]:
    """Write the scan as an HTML page in the data dir and record it as an asset."""
    scan_result = ctx.parameters["scan"]
    generated_at = datetime.now(UTC).isoformat(timespec="seconds")
    title = f"Directory insights: {scan_result['root']}"
    folder = data_dir() / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / f"directory-insights-{ctx.run_id[:8]}.html").resolve()
    path.write_text(_html(title, generated_at, scan_result))
    payload = {
        "outputDir": str(folder.resolve()),
        "reportPath": str(path),
        "reportTitle": title,
        "generatedAt": generated_at,
        "totals": scan_result["totals"],
    }
    return {**payload, "assets": [{"assetId": REPORT_ASSET, "payload": payload}]}


def _html(title: str, generated_at: str, scan_result: dict[str, Any]) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(entry['type'])}</td><td>{entry['files']}</td>"
        f"<td>{entry['bytes']:,}</td></tr>"
        for entry in scan_result["byType"]
    )
    totals = scan_result["totals"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{totals["files"]} files, {totals["directories"]} folders, {totals["bytes"]:,} bytes.
Generated {generated_at}.</p>
<table border="1" cellpadding="4">
<tr><th>type</th><th>files</th><th>bytes</th></tr>
{rows}
</table>
</body></html>
"""


@apphub.job("archive-report", name="Archive the insights report")
def archive(ctx: JobContext) -> dict[str, Any]:
    """Pack a report (the newest one, unless `reportPath` names one) into a .tar.gz."""
    report = ctx.parameters.get("reportPath") or _newest_report()
    source = Path(report)
    folder = data_dir() / "archives"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = (folder / f"{source.stem}-{stamp}.tar.gz").resolve()
    with tarfile.open(target, "w:gz") as bundle:
        bundle.add(source, arcname=source.name)
    payload = {
        "archivePath": str(target),
        "sourceReport": str(source),
        "bytes": target.stat().st_size,
    }
    return {**payload, "assets": [{"assetId": ARCHIVE_ASSET, "payload": payload}]}


def _newest_report() -> str:
    reports = sorted((data_dir() / "reports").glob("*.html"), key=lambda p: p.stat().st_mtime)
    if not reports:
        raise FileNotFoundError("no report to archive yet: run directory-insights-report first")
    return str(reports[-1])


report_workflow = apphub.workflow(
    "directory-insights-report",
    name="Directory insights report",
    description="Scan a directory and write an HTML report of file counts and sizes by type.",
    parameters_schema={"type": "object", "properties": {"root": {"type": "string"}}},
    default_parameters={"root": "."},
)
scanned = report_workflow.step("scan", scan, parameters={"root": "{{ parameters.root }}"})
report_workflow.step(
    "render",
    render,
    depends_on=[scanned],
    parameters={"scan": "{{ steps.scan.result }}"},
    produces=[
        {
            "assetId": REPORT_ASSET,
            "schema": {
                "type": "object",
                "required": ["reportPath", "reportTitle", "generatedAt"],
                "properties": {
                    "reportPath": {"type": "string"},
                    "reportTitle": {"type": "string"},
                    "generatedAt": {"type": "string"},
                },
            },
            "freshness": {"cadenceMs": REPORT_CADENCE_MS},
            "autoMaterialize": {},
        }
    ],
)

archive_workflow = apphub.workflow(
    "directory-insights-archive",
    name="Directory insights archive",
    description="Pack the latest directory insights report into a .tar.gz.",
)
archive_workflow.step(
    "archive",
    archive,
    consumes=[{"assetId": REPORT_ASSET}],
    produces=[{"assetId": ARCHIVE_ASSET, "autoMaterialize": {"onUpstreamUpdate": True}}],
)
