"""Limits and the one error of the jsonPath subset."""

from __future__ import annotations

MAX_LENGTH = 512
MAX_DEPTH = 50
MAX_STEPS = 200_000
_INT4 = 2**31


class JsonPathError(ValueError):
    """A jsonPath that cannot be parsed, is not supported on SQLite, or costs too much."""
