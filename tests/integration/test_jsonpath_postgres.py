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
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import column, create_engine, event, select, table, text
from sqlalchemy.dialects.postgresql import JSONB

from apphub.domain.jsonpath import JsonPathError, compile_path
from apphub.store.database import open_database
from apphub.store.jsonpath_sql import (
    SQLITE_FUNCTION,
    check_postgres_path,
    jsonpath_condition,
    register_sqlite_jsonpath,
)

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
        except (asyncpg.PostgresError, UnicodeDecodeError):  # see test_both_refuse
            return False
        return True

    try:
        yield oracle, parses
    finally:
        loop.run_until_complete(connection.close())
        loop.close()


def refusal(path: str) -> str | None:
    """Why the subset refuses `path`, or None when it compiles."""
    try:
        compile_path(path)
    except JsonPathError as error:
        return str(error)
    return None


def agrees_on_refusal(parses: Parses, path: str) -> bool:
    """A refusal is right when PostgreSQL refuses too or the subset says it lacks the feature."""
    reason = refusal(path)
    assert reason is not None
    return "not supported on SQLite" in reason or not parses(path)


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
    [
        "[*]",
        "[0]",
        "[1]",
        "[2]",
        "[-1]",
        "[last]",
        "[last - 1]",
        "[0, 2]",
        "[1 to last]",
        "[0 to 1]",
    ]
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
        return f"{draw(paths(depth, roots))} starts with {draw(string_literals)}"
    inner = predicates(depth + 1, roots)
    if kind in {"and", "or"}:
        operator = "&&" if kind == "and" else "||"
        return f"({draw(inner)}) {operator} ({draw(inner)})"
    return f"!({draw(inner)})" if kind == "not" else f"({draw(inner)}) is unknown"


queries = paths() | predicates()


@settings(
    max_examples=300,
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


@st.composite
def patterns(draw: st.DrawFn, depth: int = 0) -> str:
    """Small POSIX regexes: atoms, classes, anchors, word boundaries, groups, alternation."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        atom = draw(REGEX_ATOMS)
        if depth < 1 and draw(st.integers(0, 3)) == 0:
            atom = f"({draw(patterns(depth + 1))})"
        parts.append(atom + draw(st.sampled_from(["", "", "*", "+", "?", "{1,2}", "*?"])))
    alternative = draw(st.none() | patterns(depth + 1)) if depth < 1 else None
    return "".join(parts) + (f"|{alternative}" if alternative else "")


REGEX_ATOMS = st.sampled_from(
    ["a", "A", "b", ".", "é", "[ab]", "[^a]", "[]a]", "[A-Z]", "\\d", "\\w", "\\s", "\\.",
     "^", "$", "\\y", "\\m", "\\M", "\\n"]
)  # fmt: skip
REGEX_FLAGS = st.sampled_from(["", "i", "s", "m", "sm", "q", "iq", "is"])


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pattern=patterns(),
    flags=REGEX_FLAGS,
    text=st.text(st.sampled_from(list("aAbB1 _.\néÉ")), max_size=6),
)
def test_like_regex_agrees_with_postgresql(
    postgres: tuple[Oracle, Parses], pattern: str, flags: str, text: str
) -> None:
    oracle, parses = postgres
    path = f"$ like_regex {json.dumps(pattern)}" + (f' flag "{flags}"' if flags else "")
    if refusal(path) is not None:
        assert agrees_on_refusal(parses, path), (path, refusal(path))
        return
    assert compile_path(path).matches(text) is oracle(json.dumps(text), path, True), (path, text)


MUTATIONS = [*'$@.[]*,?()=<>!&|"-+1e0 \\', "to", "last", "exists", "is unknown",
             "like_regex", "true", "null", "\\u", "\\x4", "é", "$a", "1.", ".5", "&&", "==",
             "lax ", "strict "]  # fmt: skip


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    query=queries,
    edits=st.lists(
        st.tuples(st.integers(0, 500), st.booleans(), st.sampled_from(MUTATIONS)),
        min_size=1,
        max_size=3,
    ),
    document=documents,
)
def test_the_parser_accepts_what_postgresql_accepts(
    postgres: tuple[Oracle, Parses],
    query: str,
    edits: list[tuple[int, bool, str]],
    document: Any,
) -> None:
    """Valid queries with a few characters deleted or inserted: both parsers must agree."""
    oracle, parses = postgres
    path = query
    for offset, delete, insert in edits:
        at = offset % (len(path) + 1)
        path = path[:at] + path[at + 1 :] if delete else path[:at] + insert + path[at:]
    if refusal(path) is not None:
        assert agrees_on_refusal(parses, path), (path, refusal(path))
        return
    assert parses(path), path
    compiled = compile_path(path)
    expected = oracle(json.dumps(document), path, compiled.is_predicate)
    assert compiled.matches(document) is expected, (json.dumps(document), path)


EVALUATION_REGRESSIONS = [
    # Lax-mode corners checked against PostgreSQL 15 while building the evaluator.
    ({"a": [[1]]}, "$.a == 1"),  # comparison operands unwrap one level only
    ({"a": {}}, "$.a != null"),  # null against anything else: only != is true
    ({"a": []}, "$.a != null"),  # an empty array unwraps to nothing: false
    ([{"a": 1}, [{"a": 2}]], "$.* == 2"),  # .* unwraps the root array, not nested ones
    ({"a": [[[1, 2]]]}, "$.a ? (@ == 2)"),  # a filter unwraps one level, then @ is [[1, 2]]
    ({"a": [1, 2, 3]}, "$.a[-0.5] == 1"),  # subscripts truncate toward zero
    ({"a": [1, 2, 3]}, "exists($.a[99999999999])"),  # out of int4 range: an error, NULL
    ({"a": [1, 2, 3]}, "$.a[0, 99999999999]"),  # ...unless an item was found before it
    ({"a": "x\n"}, '$.a like_regex "x$"'),  # $ is the very end of the text without "m"
    ({"a": "b\na"}, '$.a like_regex "[^b]a"'),  # [^...] never matches a newline by default
    ({"a": 0.1}, "$.a == 0.1"),  # the float compares as its JSON text
    ({"a": "\U0001f600"}, '$.a == "\\ud83d\\ude00"'),  # surrogate pairs combine
]


@pytest.mark.parametrize(("document", "path"), EVALUATION_REGRESSIONS)
def test_evaluation_regressions(postgres: tuple[Oracle, Parses], document: Any, path: str) -> None:
    oracle, _ = postgres
    compiled = compile_path(path)
    assert compiled.matches(document) is oracle(json.dumps(document), path, compiled.is_predicate)


PARSER_REGRESSIONS = [
    # Mismatches the differential tests found: PostgreSQL accepts, the subset must refuse
    # with "not supported on SQLite" rather than a misleading syntax error.
    "$1a",  # a variable named "1a", not `$` followed by a bad number
    "(exists($[*]))[last - 1]",  # a parenthesized predicate used as a value
    "$.\\b",  # an escape inside an unquoted member name
]


@pytest.mark.parametrize("path", PARSER_REGRESSIONS)
def test_parser_regressions(postgres: tuple[Oracle, Parses], path: str) -> None:
    _, parses = postgres
    assert parses(path)
    with pytest.raises(JsonPathError, match="not supported on SQLite"):
        compile_path(path)


@pytest.mark.parametrize(
    "path",
    [
        '$ like_regex "\\\\m*"',  # Python accepts a repeated word boundary, PostgreSQL does not
        "1.5é",  # PostgreSQL's message quotes half of the "é": asyncpg cannot decode it
    ],
)
def test_both_refuse(postgres: tuple[Oracle, Parses], path: str) -> None:
    _, parses = postgres
    assert not parses(path)
    with pytest.raises(JsonPathError):
        compile_path(path)


# ------------------------------------------------------------------ through SQLAlchemy

PAYLOADS = [
    {"count": 5, "items": [{"qty": 4}, {"qty": 1}], "name": "Alpha"},
    {"count": 1, "items": [], "name": "beta"},
    {"name": "gamma"},
]
FILTERS = [
    ("$.count > 3", [0]),
    ("$.count", [0, 1]),
    ("$.items[*] ? (@.qty > 3)", [0]),
    ('$.name like_regex "^a" flag "i"', [0]),
    ("!exists($.count)", [2]),
]


async def test_postgresql_conditions_filter_rows(postgres_url: str) -> None:
    database = open_database(postgres_url)
    try:
        async with database.read() as connection:
            await connection.execute(text("CREATE TEMP TABLE jp (n int, payload jsonb)"))
            for n, payload in enumerate(PAYLOADS):
                await connection.execute(
                    text("INSERT INTO jp VALUES (:n, CAST(:p AS jsonb))"),
                    {"n": n, "p": json.dumps(payload)},
                )
            rows = table("jp", column("n"), column("payload", JSONB))
            for path, expected in [*FILTERS, ("$.items.size() > 1", [0])]:
                query = select(rows.c.n).where(
                    jsonpath_condition(rows.c.payload, path, "postgresql")
                )
                found = (await connection.execute(query.order_by(rows.c.n))).scalars().all()
                assert found == expected, path
    finally:
        await database.dispose()


async def test_check_postgres_path_reports_postgresql_errors(postgres_url: str) -> None:
    database = open_database(postgres_url)
    try:
        async with database.read() as connection:
            await check_postgres_path(connection, "$.items.size() > 1")
            with pytest.raises(JsonPathError, match="syntax error"):
                await check_postgres_path(connection, "$.a ==")
            with pytest.raises(JsonPathError, match="Unrecognized flag character"):
                await check_postgres_path(connection, '$ like_regex "a" flag "z"')
            with pytest.raises(JsonPathError, match="trailing junk"):
                await check_postgres_path(connection, "1.5é")
            # The savepoint kept the surrounding transaction usable.
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await database.dispose()


def test_sqlite_conditions_filter_rows() -> None:
    engine = create_engine("sqlite://")
    event.listen(engine, "connect", lambda dbapi, _record: register_sqlite_jsonpath(dbapi))
    rows = table("jp", column("n"), column("payload"))
    try:
        with engine.connect() as connection:
            connection.execute(text("CREATE TABLE jp (n INTEGER, payload TEXT)"))
            connection.execute(
                text("INSERT INTO jp VALUES (:n, :p)"),
                [{"n": n, "p": json.dumps(payload)} for n, payload in enumerate(PAYLOADS)],
            )
            for path, expected in FILTERS:
                condition = jsonpath_condition(rows.c.payload, path, "sqlite")
                query = select(rows.c.n).where(condition).order_by(rows.c.n)
                assert connection.execute(query).scalars().all() == expected, path
    finally:
        engine.dispose()


def test_sqlite_filters_a_table_with_the_registered_function() -> None:
    connection = sqlite3.connect(":memory:")
    try:
        register_sqlite_jsonpath(connection)
        connection.execute("CREATE TABLE events (n INTEGER, payload TEXT)")
        connection.executemany(
            "INSERT INTO events VALUES (?, ?)",
            [(n, json.dumps(payload)) for n, payload in enumerate(PAYLOADS)],
        )
        query = f"SELECT n FROM events WHERE {SQLITE_FUNCTION}(payload, ?) = 1 ORDER BY n"
        for path, expected in FILTERS:
            assert [row[0] for row in connection.execute(query, (path,))] == expected, path
    finally:
        connection.close()
