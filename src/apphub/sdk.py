"""Definitions in Python: `@apphub.job(...)` and `apphub.workflow(...)`.

The SDK only builds the same specs the HTTP API takes, so a definition written here is
checked by exactly the same rules; `apphub serve --defs MODULE` registers what a module
defines when the server starts (creating, updating, or leaving alone what is unchanged).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic.alias_generators import to_camel

from apphub.domain.jobs import JobSpec
from apphub.domain.workflows import WorkflowSpec

F = TypeVar("F", bound=Callable[..., Any])
JOB_ATTRIBUTE = "__apphub_job__"


def job(
    slug: str,
    *,
    name: str | None = None,
    runtime: str = "python",
    type: str = "batch",
    parameters_schema: dict[str, Any] | None = None,
    default_parameters: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
    timeout_ms: int | None = None,
    retry_policy: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Callable[[F], F]:
    """Declare a function as a job; its entry point is where it lives (`module:function`).

    The function is returned unchanged, so it can still be called directly in tests.
    """

    def declare(function: F) -> F:
        spec = JobSpec.model_validate(
            _without_none(
                {
                    "slug": slug,
                    "name": name or slug,
                    "runtime": runtime,
                    "type": type,
                    "entryPoint": f"{function.__module__}:{function.__qualname__}",
                    "parametersSchema": parameters_schema,
                    "defaultParameters": default_parameters,
                    "outputSchema": output_schema,
                    "timeoutMs": timeout_ms,
                    "retryPolicy": retry_policy,
                    "metadata": metadata,
                }
            )
        )
        setattr(function, JOB_ATTRIBUTE, spec)
        return function

    return declare


def job_spec(function: Callable[..., Any]) -> JobSpec:
    spec = getattr(function, JOB_ATTRIBUTE, None)
    if not isinstance(spec, JobSpec):
        raise TypeError(f"{function!r} is not decorated with @apphub.job")
    return spec


@dataclass(frozen=True)
class StepHandle:
    """What `Workflow.step` returns; pass it to `depends_on` of later steps."""

    id: str


@dataclass
class Workflow:
    """A workflow built in code; `spec()` gives the same body `POST /workflows` takes."""

    slug: str
    name: str | None = None
    description: str | None = None
    parameters_schema: dict[str, Any] | None = None
    default_parameters: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[JobSpec] = field(default_factory=list)

    def step(
        self,
        step_id: str,
        job: Callable[..., Any] | str,
        *,
        depends_on: Sequence[str | StepHandle] = (),
        **fields: Any,
    ) -> StepHandle:
        """A job step; `job` is an `@apphub.job` function or a registered job's slug.

        Other keyword arguments are the contract's step fields in snake_case
        (`parameters`, `produces`, `store_result_as`, `retry_policy`, `timeout_ms`, ...).
        """
        body = {"id": step_id, "jobSlug": self._job_slug(job), **_camel(fields)}
        return self._add(body, depends_on)

    def fanout(
        self,
        step_id: str,
        *,
        collection: Any,
        template_id: str,
        job: Callable[..., Any] | str,
        template: dict[str, Any] | None = None,
        depends_on: Sequence[str | StepHandle] = (),
        **fields: Any,
    ) -> StepHandle:
        """A fan-out step running `job` once per item of `collection` (a list or a template)."""
        body = {
            "id": step_id,
            "type": "fanout",
            "collection": collection,
            "template": {
                "id": template_id,
                "jobSlug": self._job_slug(job),
                **_camel(template or {}),
            },
            **_camel(fields),
        }
        return self._add(body, depends_on)

    def spec(self) -> WorkflowSpec:
        return WorkflowSpec.model_validate(
            _without_none(
                {
                    "slug": self.slug,
                    "name": self.name or self.slug,
                    "description": self.description,
                    "steps": self.steps,
                    "parametersSchema": self.parameters_schema,
                    "defaultParameters": self.default_parameters,
                    "metadata": self.metadata,
                }
            )
        )

    def _job_slug(self, job: Callable[..., Any] | str) -> str:
        if isinstance(job, str):
            return job
        spec = job_spec(job)
        if all(known.slug != spec.slug for known in self.jobs):
            self.jobs.append(spec)
        return spec.slug

    def _add(self, body: dict[str, Any], depends_on: Sequence[str | StepHandle]) -> StepHandle:
        if depends_on:
            body["dependsOn"] = [d.id if isinstance(d, StepHandle) else d for d in depends_on]
        self.steps.append(body)
        return StepHandle(body["id"])


def workflow(slug: str, **fields: Any) -> Workflow:
    return Workflow(slug, **fields)


@dataclass
class Definitions:
    jobs: list[JobSpec] = field(default_factory=list)
    workflows: list[WorkflowSpec] = field(default_factory=list)

    def add_job(self, spec: JobSpec) -> None:
        if all(known.slug != spec.slug for known in self.jobs):
            self.jobs.append(spec)


def collect(namespace: Iterable[Any]) -> Definitions:
    """Every job function and workflow among `namespace`'s values (a module's attributes)."""
    found = Definitions()
    workflows = []
    for value in namespace:
        if callable(value) and isinstance(getattr(value, JOB_ATTRIBUTE, None), JobSpec):
            found.add_job(getattr(value, JOB_ATTRIBUTE))
        elif isinstance(value, Workflow):
            workflows.append(value)
    for built in workflows:
        for spec in built.jobs:
            found.add_job(spec)
        found.workflows.append(built.spec())
    return found


def load_definitions(target: str) -> Definitions:
    """Import a module (`examples.directory_insights`) or a file path, and collect from it.

    A file path is imported under its dotted name relative to the working directory, so the
    entry points it declares are the ones workers will import.
    """
    if target.endswith(".py") or os.sep in target:
        target = _module_name(Path(target))
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(target)
    return collect(vars(module).values())


def _module_name(path: Path) -> str:
    relative = path.resolve().relative_to(Path.cwd().resolve())
    return ".".join(relative.with_suffix("").parts)


def _camel(fields: dict[str, Any]) -> dict[str, Any]:
    return {to_camel(key): value for key, value in fields.items() if value is not None}


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
