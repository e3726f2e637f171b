"""Small helpers shared by repositories: ids and row → wire-shape conversion."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel, to_snake


def new_id() -> str:
    return str(uuid.uuid4())


@cache
def _camel(name: str) -> str:
    return to_camel(name)


@cache
def _snake(name: str) -> str:
    return to_snake(name)


def column_values(model: BaseModel, *, exclude: set[str] | None = None) -> dict[str, Any]:
    """A model's top-level fields under their column names; nested JSON keeps its wire shape."""
    dumped = model.model_dump(mode="json", by_alias=True, exclude=exclude)
    return {_snake(key): value for key, value in dumped.items()}


def camel_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row's columns under their wire names, ready for a model's `model_validate`."""
    return {_camel(key): value for key, value in row.items()}


def same_columns(changes: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """`executemany` needs one set of columns per batch."""
    batches: dict[frozenset[str], list[dict[str, Any]]] = {}
    for change in changes:
        batches.setdefault(frozenset(change), []).append(change)
    return list(batches.values())
