"""Run parameters: layered defaults, and checks against a definition's JSON Schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator

from apphub.domain.errors import DefinitionError


def merge_parameters(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers win, key by key (a shallow merge, as the contract describes)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update(layer)
    return merged


def parameter_problems(schema: Mapping[str, Any] | None, parameters: Any) -> list[dict[str, str]]:
    """Every way `parameters` breaks `schema`, each naming the field and the rule."""
    if not schema:
        return []
    validator = Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(parameters), key=lambda e: list(e.absolute_path)):
        path = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
        )
        problems.append(
            {"field": f"parameters{path}", "rule": str(error.validator), "message": error.message}
        )
    return problems


def check_parameters(schema: Mapping[str, Any] | None, parameters: Any) -> None:
    problems = parameter_problems(schema, parameters)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DefinitionError(
            f"{first['field']}: {first['message']}{more}",
            reason="invalid_parameters",
            detail={"errors": problems},
        )
