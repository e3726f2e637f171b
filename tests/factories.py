"""Request bodies for tests: valid by default, changed per test with keyword overrides."""

from __future__ import annotations

from typing import Any


def job_body(slug: str = "scan", **overrides: Any) -> dict[str, Any]:
    return {
        "slug": slug,
        "name": slug.replace("-", " ").title(),
        "type": "batch",
        "runtime": "python",
        "entryPoint": "examples.jobs:scan",
        **overrides,
    }


def step(step_id: str, *depends_on: str, job: str = "scan", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "jobSlug": job, "dependsOn": list(depends_on), **extra}


def workflow_body(
    slug: str = "report", steps: list[dict[str, Any]] | None = None, **overrides: Any
) -> dict[str, Any]:
    return {
        "slug": slug,
        "name": slug.replace("-", " ").title(),
        "steps": steps if steps is not None else [step("scan"), step("render", "scan")],
        **overrides,
    }
