"""The Python SDK builds the same specs the HTTP API takes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import apphub
from apphub.runtime import JobContext
from apphub.sdk import collect, job_spec, load_definitions


@apphub.job(
    "double-it",
    parameters_schema={"type": "object", "required": ["value"]},
    timeout_ms=5000,
    retry_policy={"maxAttempts": 2},
)
def double_it(ctx: JobContext) -> dict[str, int]:
    return {"value": ctx.parameters["value"] * 2}


def test_decorated_function_still_works_and_carries_its_spec() -> None:
    assert double_it(JobContext(parameters={"value": 4}, run_id="r")) == {"value": 8}
    spec = job_spec(double_it)
    assert spec.slug == "double-it"
    assert spec.entry_point == "tests.unit.test_sdk:double_it"
    assert spec.timeout_ms == 5000
    assert spec.retry_policy is not None
    assert spec.retry_policy.max_attempts == 2


def test_workflow_builder_wires_steps_and_collects_its_jobs() -> None:
    flow = apphub.workflow("pipeline", default_parameters={"value": 1})
    first = flow.step(
        "first", double_it, parameters={"value": "{{ parameters.value }}"}, store_result_as="first"
    )
    flow.fanout(
        "each",
        collection=[1, 2],
        template_id="one",
        job=double_it,
        template={"parameters": {"value": "{{ item }}"}},
        depends_on=[first],
    )
    spec = flow.spec()
    assert [step.id for step in spec.steps] == ["first", "each"]
    assert spec.steps[0].model_dump(mode="json")["storeResultAs"] == "first"
    assert spec.steps[1].model_dump(mode="json")["dependsOn"] == ["first"]
    found = collect([flow, double_it])
    assert [job.slug for job in found.jobs] == ["double-it"]
    assert [workflow.slug for workflow in found.workflows] == ["pipeline"]


def test_invalid_definitions_fail_with_the_api_rules() -> None:
    with pytest.raises(ValidationError, match="timeoutMs"):
        apphub.job("bad", timeout_ms=5)(double_it)
    flow = apphub.workflow("Bad Slug")
    flow.step("a", double_it)
    with pytest.raises(ValidationError, match="slug"):
        flow.spec()


def test_examples_load_by_module_or_file() -> None:
    by_module = load_definitions("examples.directory_insights")
    by_file = load_definitions("examples/directory_insights.py")
    assert [j.slug for j in by_module.jobs] == ["scan-directory", "render-report", "archive-report"]
    assert [w.slug for w in by_file.workflows] == [
        "directory-insights-report",
        "directory-insights-archive",
    ]
    assert by_file.jobs[0].entry_point == "examples.directory_insights:scan"
