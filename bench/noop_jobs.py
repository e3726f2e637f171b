"""No-op jobs, so a benchmark measures the orchestrator and nothing else."""

from __future__ import annotations

from typing import Any

from apphub.runtime import JobContext


async def noop(ctx: JobContext) -> dict[str, Any]:
    return {}


def sync_noop(ctx: JobContext) -> dict[str, Any]:
    return {}


async def produce(ctx: JobContext) -> dict[str, Any]:
    """Report the assets the step's parameters list as produced."""
    return {"assets": ctx.parameters.get("assets", [])}
