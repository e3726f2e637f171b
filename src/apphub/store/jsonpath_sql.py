"""The event log's `jsonPath` filter in SQL: PostgreSQL's own jsonpath, or our subset on SQLite.

On PostgreSQL the condition is `payload @? path` for paths and `payload @@ path` for
predicates: the operators are `jsonb_path_exists` / `jsonb_path_match` with `silent => true`,
and unlike the functions they can use the GIN index on `workflow_events.payload`. On SQLite
the condition calls a Python function registered on each connection.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Function, Integer, cast, literal, select
from sqlalchemy.dialects.postgresql import JSONPATH
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from apphub.domain.jsonpath import (
    MAX_LENGTH,
    CompiledPath,
    JsonPathError,
    compile_path,
    looks_like_predicate,
)

SQLITE_FUNCTION = "apphub_jsonpath_match"

_POSTGRES_INPUT_ERRORS = ("22", "42")
"""SQLSTATE classes PostgreSQL raises for a jsonpath it cannot read (data / syntax errors)."""


@functools.lru_cache(maxsize=256)
def _compiled(path: str) -> CompiledPath:
    return compile_path(path)


def _sqlite_match(payload: str | bytes | None, path: str | None) -> int:
    """The SQL function: 1 when `path` matches the JSON text `payload`, else 0."""
    if payload is None or path is None:
        return 0
    compiled = _compiled(path)
    try:
        document = json.loads(payload, parse_float=Decimal)
    except ValueError:
        return 0
    try:
        return 1 if compiled.matches(document) else 0
    except JsonPathError:  # the evaluation budget ran out: no match, as `silent` would
        return 0


def register_sqlite_jsonpath(connection: sqlite3.Connection) -> None:
    """Make `apphub_jsonpath_match(payload_json, path)` available on a SQLite connection."""
    connection.create_function(SQLITE_FUNCTION, 2, _sqlite_match, deterministic=True)


def jsonpath_condition(
    column: ColumnElement[Any], path: str, dialect_name: str
) -> ColumnElement[bool]:
    """A WHERE condition that keeps rows whose JSON `column` matches `path`.

    Raises JsonPathError for a path the subset cannot evaluate on SQLite, or that is too long.
    On PostgreSQL call `check_postgres_path` first to turn a syntax error into a 400.
    """
    if dialect_name == "postgresql":
        _check_length(path)
        operator = "@@" if _is_predicate_for_postgres(path) else "@?"
        condition: ColumnElement[bool] = column.bool_op(operator)(cast(literal(path), JSONPATH))
        return condition
    if dialect_name == "sqlite":
        _compiled(path)
        return Function(SQLITE_FUNCTION, column, literal(path), type_=Integer) == 1
    raise ValueError(f"jsonPath filtering is not available on {dialect_name!r}")


def _is_predicate_for_postgres(path: str) -> bool:
    """The subset parser decides when it can; PostgreSQL-only syntax falls back to the text."""
    try:
        return _compiled(path).is_predicate
    except JsonPathError:
        return looks_like_predicate(path)


def _check_length(path: str) -> None:
    if len(path) > MAX_LENGTH:
        raise JsonPathError(f"jsonPath: longer than {MAX_LENGTH} characters")


async def check_postgres_path(connection: AsyncConnection, path: str) -> None:
    """Raise JsonPathError with PostgreSQL's message when it cannot parse `path`.

    Runs in a savepoint so that the caller's transaction survives the failed cast.
    """
    _check_length(path)
    try:
        async with connection.begin_nested():
            await connection.execute(select(cast(literal(path), JSONPATH)))
    except DBAPIError as error:
        sqlstate = getattr(error.orig, "sqlstate", None) or ""
        if not sqlstate.startswith(_POSTGRES_INPUT_ERRORS):
            raise
        raise JsonPathError(f"jsonPath: {_postgres_message(error)}") from None
    except UnicodeDecodeError as error:
        # PostgreSQL can cut a multibyte character in half when it quotes the input back.
        message = bytes(error.object).decode("utf-8", "replace")
        raise JsonPathError(f"jsonPath: {message}") from None


def _postgres_message(error: DBAPIError) -> str:
    """PostgreSQL's own words (message and detail), without the driver's class prefix."""
    cause = error.orig.__cause__ if error.orig is not None else None
    message = getattr(cause, "message", None) or str(cause or error.orig)
    detail = getattr(cause, "detail", None)
    return f"{message} ({detail})" if detail else str(message)


async def checked_jsonpath_condition(
    connection: AsyncConnection, column: ColumnElement[Any], path: str
) -> ColumnElement[bool]:
    """`jsonpath_condition` for this connection's database, with the path first checked by
    PostgreSQL where it runs there (its parse errors become JsonPathError)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        await check_postgres_path(connection, path)
    return jsonpath_condition(column, path, dialect)
