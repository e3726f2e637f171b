"""Trigger predicates: `{path, operator, value?, values?, caseSensitive?, flags?}` over an event.

Paths address the whole envelope (`$.payload.namespace`, `$.source`, `$.payload.items[0]`,
`$.payload["a key"]`). Every predicate of a trigger must hold. Strings compare
case-insensitively unless `caseSensitive` is true; `notEquals` and `notIn` hold when the path
selects nothing; number operators take numbers or numeric strings on both sides.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator

from apphub.domain.base import ApiModel
from apphub.domain.templates import MISSING, walk

Operator = Literal[
    "exists",
    "equals",
    "notEquals",
    "in",
    "notIn",
    "gt",
    "gte",
    "lt",
    "lte",
    "contains",
    "regex",
]
NUMERIC: frozenset[str] = frozenset({"gt", "gte", "lt", "lte"})
TAKES_VALUE: frozenset[str] = NUMERIC | {"equals", "notEquals", "contains", "regex"}
TAKES_VALUES: frozenset[str] = frozenset({"in", "notIn"})
MAX_REGEX = 512
_SEGMENT = re.compile(r"\.([^.\[\]\"']+)|\[(\d+)\]|\[\"((?:[^\"\\]|\\.)*)\"\]|\['([^']*)'\]")
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[*+}]\)(?:[*+]|\{\d*,)")
"""A repeated group that itself repeats: the shape of catastrophic backtracking."""


def path_segments(path: str) -> list[str]:
    """`$.payload.items[0]` → `["payload", "items", "0"]`; ValueError for other syntax."""
    if not path.startswith("$"):
        raise ValueError("must start with $")
    segments: list[str] = []
    position = 1
    while position < len(path):
        match = _SEGMENT.match(path, position)
        if match is None:
            raise ValueError(f"unsupported syntax at character {position + 1}: use $.a.b[0]")
        segments.append(next(group for group in match.groups() if group is not None))
        position = match.end()
    return segments


@lru_cache(maxsize=1024)
def compile_regex(pattern: str, flags: str, case_sensitive: bool) -> re.Pattern[str]:
    """JavaScript-style flags: `i m s` map to Python's; `g u` change nothing for a test; `y`
    anchors the match at the start. ValueError for a pattern that is invalid or unsafe."""
    if _NESTED_QUANTIFIER.search(pattern):
        raise ValueError(
            "a repeated group that repeats inside is refused (catastrophic backtracking)"
        )
    options = 0 if case_sensitive and "i" not in flags else re.IGNORECASE
    options |= (re.MULTILINE if "m" in flags else 0) | (re.DOTALL if "s" in flags else 0)
    try:
        return re.compile(pattern, options)
    except re.error as error:
        raise ValueError(f"invalid regular expression: {error}") from None


class Predicate(ApiModel):
    path: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    operator: Operator
    case_sensitive: bool = False
    flags: Annotated[str, StringConstraints(pattern=r"^[gimsuy]*$", max_length=6)] | None = None
    value: Any = None
    values: Annotated[list[Any], Field(min_length=1, max_length=100)] | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        path_segments(path)
        return path

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any, info: ValidationInfo) -> Any:
        operator = info.data.get("operator")
        if operator in NUMERIC and value is not None and as_number(value) is None:
            shown = repr(value) if len(str(value)) <= 40 else f"{str(value)[:40]}…"
            raise ValueError(f"{operator} takes a finite number or a numeric string, got {shown}")
        if operator == "regex" and value is not None:
            if not isinstance(value, str) or len(value) > MAX_REGEX:
                raise ValueError(f"regex takes a pattern of at most {MAX_REGEX} characters")
            compile_regex(
                value, info.data.get("flags") or "", bool(info.data.get("case_sensitive"))
            )
        return value

    @model_validator(mode="after")
    def _operands(self) -> Predicate:
        given = self.model_fields_set
        if self.operator in TAKES_VALUE and "value" not in given:
            raise ValueError(f"value is required for operator {self.operator}")
        if self.operator in NUMERIC | {"regex"} and self.value is None:
            raise ValueError(f"value must not be null for operator {self.operator}")
        if self.operator in TAKES_VALUES and self.values is None:
            raise ValueError(f"values (a list of 1-100 items) is required for {self.operator}")
        if self.flags and self.operator != "regex":
            raise ValueError("flags apply to the regex operator only")
        return self


def as_number(value: Any) -> float | None:
    """A number, or a string that reads as one; booleans, NaN, infinities and integers too
    large for a float are not numbers: an event's payload is untrusted, and one such value
    must compare as "not a number" rather than raise while its batch is decided."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip())
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _fold(value: Any, case_sensitive: bool) -> Any:
    return value if case_sensitive or not isinstance(value, str) else value.casefold()


def _same(left: Any, right: Any, case_sensitive: bool) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    return bool(_fold(left, case_sensitive) == _fold(right, case_sensitive))


def _compare(operator: str, actual: Any, expected: Any) -> bool:
    left, right = as_number(actual), as_number(expected)
    if left is None or right is None:
        return False
    return {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[
        operator
    ]


def _contains(actual: Any, expected: Any, case_sensitive: bool) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        return bool(_fold(expected, case_sensitive) in _fold(actual, case_sensitive))
    if isinstance(actual, list):
        return any(_same(item, expected, case_sensitive) for item in actual)
    return False


def holds(predicate: Predicate, envelope: Any) -> bool:
    """Whether one predicate holds for the event envelope (a JSON object)."""
    found = walk(envelope, path_segments(predicate.path))
    operator, sensitive = predicate.operator, predicate.case_sensitive
    if operator == "exists":
        return found is not MISSING
    if operator == "notEquals":
        return found is MISSING or not _same(found, predicate.value, sensitive)
    if operator == "notIn":
        values = predicate.values or []
        return found is MISSING or not any(_same(found, v, sensitive) for v in values)
    if found is MISSING:
        return False
    if operator == "equals":
        return _same(found, predicate.value, sensitive)
    if operator == "in":
        return any(_same(found, v, sensitive) for v in predicate.values or [])
    if operator in NUMERIC:
        return _compare(operator, found, predicate.value)
    if operator == "contains":
        return _contains(found, predicate.value, sensitive)
    pattern = compile_regex(str(predicate.value), predicate.flags or "", sensitive)
    if not isinstance(found, str):
        return False
    search = pattern.match if "y" in (predicate.flags or "") else pattern.search
    return search(found) is not None


def all_hold(predicates: Sequence[Predicate], envelope: Any) -> bool:
    return all(holds(predicate, envelope) for predicate in predicates)
