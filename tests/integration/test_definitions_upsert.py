"""`--defs` registration: create, leave unchanged definitions alone, update changed ones."""

from __future__ import annotations

import httpx

from apphub.api.app import register_definitions
from apphub.sdk import load_definitions
from apphub.store.database import Database


async def test_registering_twice_changes_nothing_and_a_change_bumps_the_version(
    api: httpx.AsyncClient, database: Database
) -> None:
    definitions = load_definitions("examples.directory_insights")
    await register_definitions(database, definitions)
    await register_definitions(database, definitions)
    workflows = {w["slug"]: w for w in (await api.get("/workflows")).json()["data"]}
    assert set(workflows) == {"directory-insights-report", "directory-insights-archive"}
    assert all(workflow["version"] == 1 for workflow in workflows.values())
    jobs = {j["slug"]: j for j in (await api.get("/jobs")).json()["data"]}
    assert all(job["version"] == 1 for job in jobs.values())

    report = next(w for w in definitions.workflows if w.slug == "directory-insights-report")
    definitions.workflows[definitions.workflows.index(report)] = report.model_copy(
        update={"description": "changed in code"}
    )
    await register_definitions(database, definitions)
    changed = (await api.get("/workflows/directory-insights-report")).json()["data"]["workflow"]
    assert (changed["version"], changed["description"]) == (2, "changed in code")
    untouched = (await api.get("/workflows/directory-insights-archive")).json()["data"]
    assert untouched["workflow"]["version"] == 1
