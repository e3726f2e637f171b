"""JSON Schema checks (draft 2020-12) for the schemas users attach to jobs, workflows, assets."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


def check_json_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """Reject a schema that is not valid draft 2020-12, with the validator's own words."""
    if schema is None:
        return None
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        raise ValueError(f"not a valid JSON Schema (draft 2020-12): {error.message}") from None
    return schema
