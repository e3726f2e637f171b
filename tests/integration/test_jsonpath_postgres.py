"""The SQLite jsonPath subset against PostgreSQL, the oracle: same documents, same answers.

Hypothesis builds JSON documents over a small key alphabet and paths/predicates from the
subset grammar; each must give `jsonb_path_exists` (paths) or `jsonb_path_match`
(predicates, NULL = false) exactly. Found mismatches are kept as explicit regressions.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apphub.domain.jsonpath import JsonPathError, compile_path
from apphub.store.jsonpath_sql import SQLITE_FUNCTION, register_sqlite_jsonpath

Oracle = Callable[[str, str, bool], bool]
Parses = Callable[[str], bool]


@pytest.fixture(scope="module")
def postgres(postgres_url: str) -> Iterator[tuple[Oracle, Parses]]:
    """One asyncpg connection for the module, driven from synchronous hypothesis tests."""
    loop = asyncio.new_event_loop()
    connection = loop.run_until_complete(
        asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    )

    def oracle(document: str, path: str, predicate: bool) -> bool:
        function = "jsonb_path_match" if predicate else "jsonb_path_exists"
        query = f"SELECT {function}($1::jsonb, $2::jsonpath, '{{}}', true)"
        return bool(loop.run_until_complete(connection.fetchval(query, document, path)))

    def parses(path: str) -> bool:
        try:
            loop.run_until_complete(connection.fetchval("SELECT $1::jsonpath", path))
        except asyncpg.PostgresError:
            return False
        return True

    try:
        yield oracle, parses
    finally:
        loop.run_until_complete(connection.close())
        loop.close()


def ours(document: Any, path: str) -> bool:
    return compile_path(path).matches(document)


# ----------------------------------------------------------------------------- documents

KEYS = ["a", "b", "c"]
STRINGS = ["", "a", "A", "ab", "aB", "ba", "b\na", "x", "é", "É", "10", "1"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.5, -1.5, 1.0, 2.5, 1e-7, 0.1, 10**20])
    | st.sampled_from(STRINGS)
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=12,
)

# --------------------------------------------------------------------------------- paths

number_literals = st.sampled_from(["0", "1", "2", "-1", "1.0", "0.5", "-1.5", "1e-7", "0.1"])
string_literals = st.sampled_from(['""', '"a"', '"A"', '"ab"', '"b\\na"', '"\\u00e9"', '"1"'])
literals = number_literals | string_literals | st.sampled_from(["true", "false", "null"])
subscripts = st.sampled_from(
    ["[*]", "[0]", "[1]", "[2]", "[-1]", "[last]", "[last - 1]", "[0, 2]", "[1 to last]", "[0 to 1]"]
)
members = st.sampled_from([".a", ".b", ".c", '."a"', ".*", ".d"])
regexes = st.sampled_from(['"a"', '"^a"', '"b$"', '"^A"', '"a.a"', '"[^b]"', '"\\\\d"', '"é"'])
flags = st.sampled_from(["", ' flag "i"', ' flag "s"', ' flag "m"', ' flag "q"'])
comparisons = st.sampled_from(["==", "!=", "<>", "<", "<=", ">", ">="])


@st.composite
def paths(draw: st.DrawFn, depth: int = 0, roots: tuple[str, ...] = ("$",)) -> str:
    """`$` or `@` followed by up to four accessors, filters included while shallow."""
    steps = members | subscripts
    if depth < 2:
        steps = steps | predicates(depth + 1, ("@", "$")).map(lambda p: f" ? ({p})")
    return draw(st.sampled_from(roots)) + "".join(draw(st.lists(steps, max_size=4)))


@st.composite
def predicates(draw: st.DrawFn, depth: int = 0, roots: tuple[str, ...] = ("$",)) -> str:
    """A predicate of the subset; booleans nest while the depth allows."""
    operand = paths(depth, roots) | literals
    kinds = ["compare", "compare", "exists", "regex", "starts"]
    if depth < 2:
        kinds += ["and", "or", "not", "unknown"]
    kind = draw(st.sampled_from(kinds))
    if kind == "compare":
        left = draw(paths(depth, roots))
        left, right = draw(st.permutations([left, draw(operand)]))
        return f"{left} {draw(comparisons)} {right}"
    if kind == "exists":
        return f"exists({draw(paths(depth, roots))})"
    if kind == "regex":
        return f"{draw(paths(depth, roots))} like_regex {draw(regexes)}{draw(flags)}"
    if kind == "starts":
        return f'{draw(paths(depth, roots))} starts with {draw(string_literals)}'
    inner = predicates(depth + 1, roots)
    if kind in {"and", "or"}:
        operator = "&&" if kind == "and" else "||"
        return f"({draw(inner)}) {operator} ({draw(inner)})"
    return f"!({draw(inner)})" if kind == "not" else f"({draw(inner)}) is unknown"


queries = paths() | predicates()


@settings(
    max_examples=int(__import__("os").environ.get("JP_N", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=documents, path=queries)
def test_the_subset_agrees_with_postgresql(
    postgres: tuple[Oracle, Parses], document: Any, path: str
) -> None:
    oracle, _ = postgres
    compiled = compile_path(path)
    expected = oracle(json.dumps(document), path, compiled.is_predicate)
    assert compiled.matches(document) is expected, (json.dumps(document), path)


TOKENS = st.sampled_from(
    ["$", "@", ".a", ".*", "[*]", "[0]", "[last]", "[1 to 2]", "?", "(", ")", "==", "<", "!",
     "&&", "||", "1", "-1", '"a"', "true", "null", "exists", "like_regex", '"^a"', "flag",
     '"i"', "is", "unknown", "starts", "with", "lax", " ", "01", ".5", "last"]
)  # fmt: skip


@settings(
    max_examples=int(__import__("os").environ.get("JP_N", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tokens=st.lists(TOKENS, min_size=1, max_size=10), document=documents)
def test_the_parser_accepts_only_what_postgresql_accepts(
    postgres: tuple[Oracle, Parses], tokens: list[str], document: Any
) -> None:
    oracle, parses = postgres
    path = " ".join(tokens)
    try:
        compiled = compile_path(path)
    except JsonPathError as error:
        if "not supported on SQLite" not in str(error):
            assert not parses(path), (path, str(error))
        return
    assert parses(path), path
    expected = oracle(json.dumps(document), path, compiled.is_predicate)
    assert compiled.matches(document) is expected, (json.dumps(document), path)


REGRESSIONS = [
    # (document, path) pairs where an earlier evaluator disagreed with PostgreSQL.
    ({"a": [[1]]}, "$.a == 1"),
    ({"a": {}}, "$.a != null"),
    ([{"a": 1}, [{"a": 2}]], "$.* == 2"),
    ({"a": [[[1, 2]]]}, "$.a ? (@ == 2)"),
    ({"a": "x\n"}, '$.a like_regex "x$"'),
    ({"a": "b\na"}, '$.a like_regex "[^b]a"'),
    ({"a": 0.1}, "$.a == 0.1"),
]


@pytest.mark.parametrize(("document", "path"), REGRESSIONS)
def test_regressions_agree_with_postgresql(
    postgres: tuple[Oracle, Parses], document: Any, path: str
) -> None:
    oracle, _ = postgres
    compiled = compile_path(path)
    assert compiled.matches(document) is oracle(json.dumps(document), path, compiled.is_predicate)


def test_sqlite_filters_rows_with_the_registered_function() -> None:
    connection = sqlite3.connect(":memory:")
    try:
        register_sqlite_jsonpath(connection)
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT)")
        payloads = [{"count": 5, "items": [{"qty": 4}]}, {"count": 1}, {"items": []}, None]
        connection.executemany(
            "INSERT INTO events (payload) VALUES (?)",
            [(None if p is None else json.dumps(p),) for p in payloads],
        )

        def ids(path: str) -> list[int]:
            query = f"SELECT id FROM events WHERE {SQLITE_FUNCTION}(payload, ?) = 1 ORDER BY id"
            return [row[0] for row in connection.execute(query, (path,))]

        assert ids("$.count > 3") == [1]
        assert ids("$.count") == [1, 2]
        assert ids("$.items[*] ? (@.qty > 3)") == [1]
        assert ids("!exists($.count)") == [3]
    finally:
        connection.close()


def test_decimal_payloads_compare_like_postgresql() -> None:
    """The SQLite function reads numbers as decimals, as jsonb does."""
    document = json.loads('{"a": 0.30000000000000004}', parse_float=Decimal)
    assert not ours(document, "$.a == 0.3")
    assert ours(document, "$.a > 0.3")
