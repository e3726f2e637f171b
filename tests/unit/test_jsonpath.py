"""The jsonPath subset: each construct, the path/predicate split, errors, and hostile input.

Expected answers are PostgreSQL's (lax mode); the differential test in
tests/integration/test_jsonpath_postgres.py checks the same against a real server.
"""

from __future__ import annotations

import json
import sqlite3
import string
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import column, select, table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from apphub.domain.jsonpath import (
    MAX_DEPTH,
    MAX_LENGTH,
    JsonPathError,
    compile_path,
    looks_like_predicate,
)
from apphub.store.jsonpath_sql import jsonpath_condition, register_sqlite_jsonpath

ORDER = {"id": "o-1", "count": 5, "tags": ["a", "b"], "items": [{"id": 1, "qty": 2}, {"id": 2}]}


def matches(path: str, document: Any = ORDER) -> bool:
    return compile_path(path).matches(document)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", True),
        ("$.id", True),
        ("$.missing", False),
        ('$."count"', True),
        ("$.*", True),
        ("$.items[*].qty", True),
        ("$.items.qty", True),  # lax: member access unwraps the array
        ("$.items[1].qty", False),
        ("$.items[0, 5].id", True),
        ("$.items[5]", False),  # out of range selects nothing
        ("$.items[-1]", False),
        ("$.items[1 to last].id", True),
        ("$.items[last].qty", False),
        ("$.items[last - 1].qty", True),
        ("$.items[1.9].id", True),  # subscripts are truncated
        ("$.count[0]", True),  # lax: a scalar is wrapped as a one-element array
        ("$.count[*]", True),
        ("$.count.x", False),  # member access on a non-object selects nothing
        ("$.items ? (@.qty > 1)", True),
        ("$.items[*] ? (@.qty > 3)", False),
        ("$.items ? (exists(@.qty)).id", True),
        ("$ ? ($.count == 5)", True),
        ("($.items)[0].id", True),
        ("lax $.id", True),
        ('"a literal"', True),
    ],
)
def test_paths_match_when_they_select_something(path: str, expected: bool) -> None:
    compiled = compile_path(path)
    assert not compiled.is_predicate
    assert compiled.matches(ORDER) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.count > 3", True),
        ("$.count > 7", False),
        ("3 < $.count", True),
        ("$.count == 5.0", True),  # numbers compare numerically
        ("$.count <> 5", False),
        ("$.count != 4", True),
        ("$.count >= -1.5e1", True),
        ('$.id == "o-1"', True),
        ('$.id < "o-2"', True),  # strings compare by code point
        ('$.id == "\\u006f-1"', True),
        ('$.id == "\\x6f-1"', True),
        ('$.tags == "b"', True),  # existential over the sequence
        ('$.count == "5"', False),  # different types: unknown, never true
        ("$.items == $.items", False),  # objects are not comparable: unknown
        ("$.missing == 1", False),
        ("$.id && $.count", None),
        ('$.count > 3 && $.id == "o-1"', True),
        ('$.count > 9 || $.id == "o-1"', True),
        ('!($.count == "5")', False),  # not unknown is unknown
        ('($.count == "5") is unknown', True),
        ("($.count == 5) is unknown", False),
        ("exists($.items[*] ? (@.qty == 2))", True),
        ("!exists($.missing)", True),
        ('$.id like_regex "^O-" flag "i"', True),
        ('$.id like_regex "^O-"', False),
        ('$.tags like_regex "b"', True),
        ('$.count like_regex "5"', False),  # not a string: unknown
        ('$.id starts with "o-"', True),
        ('$.items[*].id starts with "1"', False),
    ],
)
def test_predicates_match_only_when_true(path: str, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(JsonPathError, match="must be a predicate"):
            compile_path(path)
        return
    compiled = compile_path(path)
    assert compiled.is_predicate
    assert compiled.matches(ORDER) is expected


def test_a_path_with_a_comparison_inside_a_filter_is_not_a_predicate() -> None:
    assert compile_path("$.count > 3").is_predicate
    assert not compile_path("$.items[*] ? (@.n > 1)").is_predicate
    # As a path, `$.count > 3` would always select its boolean: the predicate meaning matters.
    assert not compile_path("$.count > 30").matches(ORDER)


@pytest.mark.parametrize(
    ("left", "operator", "right", "expected"),
    [
        (None, "==", None, True),
        (None, "<=", None, True),
        (None, "!=", 1, True),  # null against a non-null: only != holds
        (None, "==", 1, False),
        (None, "<", 1, False),
        ({}, "!=", None, True),
        (True, ">", False, True),
        (1, "==", True, False),  # number against boolean: unknown
        ("é", ">", "z", True),
        (0.1, "==", Decimal("0.1"), True),  # floats compare as their JSON text
        (10**20, ">", 1e19, True),
        ([[1]], "==", 1, False),  # unwrapped one level only: [1] is not comparable
    ],
)
def test_comparison_semantics(left: Any, operator: str, right: Any, expected: bool) -> None:
    assert matches(f"$.a {operator} $.b", {"a": left, "b": right}) is expected


@pytest.mark.parametrize(
    ("flags", "text", "expected"),
    [
        ("", "a\nb", False),  # `.` stops at a newline by default
        ("s", "a\nb", True),
        ("m", "x\nb", True),  # ^ after a newline only with "m"
        ("", "x\nb", False),
        ("q", "a.b", True),
        ("q", "axb", False),
        ("i", "A\nB", False),
    ],
)
def test_like_regex_flags_follow_postgresql(flags: str, text: str, expected: bool) -> None:
    pattern = "^b" if text.startswith("x") else "a.b"
    assert matches(f'$ like_regex "{pattern}" flag "{flags}"', text) is expected


def test_like_regex_translates_posix_word_boundaries_and_anchors() -> None:
    assert matches('$ like_regex "\\\\mbar\\\\M"', "foo bar")
    assert not matches('$ like_regex "\\\\ybar"', "foobar")
    assert not matches('$ like_regex "a$"', "a\n")  # `$` is the very end without "m"
    assert not matches('$ like_regex "[^x]b"', "\nb")  # [^...] stops at newlines too


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("$.items ? (@.qty > 1", "expected ')', found end of input at position 21"),
        ("$.a # 1", "unexpected character '#' at position 5"),
        ("$.a == ", "expected a path or a literal, found end of input at position 8"),
        ("$.a ? (@.b)", "a filter condition must be a predicate"),
        ("@.a == 1", "@ is only allowed inside a filter at position 1"),
        ("$[last] == last", "last is allowed only in array subscripts"),
        ('$.a == "\\x4"', "invalid hex character sequence at position 9"),
        ('$.a == "open', "unterminated string at position 8"),
        ("$.a == 01", "trailing junk after numeric literal"),
        ('$ like_regex "a" flag "z"', "unrecognized like_regex flag 'z'"),
        ('$ like_regex "("', "invalid regular expression"),
        ('$ like_regex "^*"', "quantifier operand invalid"),
        ("", "empty"),
        ("$" + ".a" * MAX_LENGTH, f"longer than {MAX_LENGTH} characters"),
    ],
)
def test_errors_say_what_and_where(path: str, message: str) -> None:
    with pytest.raises(JsonPathError, match=r"^jsonPath: ") as caught:
        compile_path(path)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("path", "construct"),
    [
        ("strict $.a", "strict mode"),
        ("$.a == $x", "a variable ($name)"),
        ("$.a + 1 > 2", "arithmetic ('+')"),
        ("$.a.size() > 2", "the item method .size()"),
        ("$.**.a", "the any-level accessor .**"),
        ('"a".b', "an accessor after a literal"),
        ("($.a == 1)[0]", "an accessor after a parenthesized predicate"),
        ("$[$.i]", "a subscript other than a number"),
        ("$ /* note */", "a comment"),
        ('$ like_regex "[[:alpha:]]"', "a POSIX bracket class"),
        ('$ like_regex "(a+)+b"', "a repeated group that holds a quantifier"),
        ('$ like_regex "(a|aa)*b"', "a repeated group that holds a quantifier or an alternation"),
        ('$ like_regex "\\\\1"', "the escape \\1"),
    ],
)
def test_unsupported_syntax_is_named(path: str, construct: str) -> None:
    with pytest.raises(JsonPathError, match="not supported on SQLite") as caught:
        compile_path(path)
    assert construct in str(caught.value)


def test_nesting_is_bounded() -> None:
    levels = MAX_DEPTH - 1  # the top level counts as one
    deep_but_allowed = "@?(" * levels + "@==1" + ")==1" * levels
    document: Any = 1
    assert compile_path(deep_but_allowed.replace("@", "$", 1)).matches(document)
    too_deep = "(" * (MAX_DEPTH + 1) + "$" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(JsonPathError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        compile_path(too_deep)


def test_evaluation_is_bounded() -> None:
    explosive = "$" + "[0,0,0,0,0,0,0,0,0,0]" * 10 + " == 2"
    with pytest.raises(JsonPathError, match="evaluation exceeded"):
        compile_path(explosive).matches(1)
    # A path stops at the first item it finds, as PostgreSQL's `@?` does.
    assert compile_path(explosive[: -len(" == 2")]).matches(1)


TOKENS = ["$", "@", ".a", "[*]", "[0]", "?", "(", ")", "==", "!", "&&", "1", '"a"', "exists"]


@given(st.text(string.printable, max_size=40) | st.lists(st.sampled_from(TOKENS)).map("".join))
def test_any_text_compiles_or_raises_json_path_error(text: str) -> None:
    try:
        compiled = compile_path(text)
    except JsonPathError:
        return
    compiled.matches({"a": [1, {"a": "a"}]})


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.a.size() > 3", True),
        ('strict $.a.type() == "string"', True),
        ("($.a.size() > 1)", True),
        ("!($.a.size() > 1)", True),
        ("exists($.a.size())", True),
        ('$.a.size() like_regex "1"', True),
        ("$.a + 1 >= 2 && $.b", True),
        ("$.a.size()", False),
        ("$.a ? (@.size() > 3)", False),
        ('$."x > y".size()', False),
        ('$.a.keyvalue() ? (@.key starts with "x")', False),
        ("$.like_regex.size()", False),
        ("($.a)[last - 1]", False),
    ],
)
def test_the_textual_predicate_rule(path: str, expected: bool) -> None:
    assert looks_like_predicate(path) is expected


def test_postgresql_conditions_use_the_indexable_operators() -> None:
    events = table("events", column("payload", JSONB))

    def sql(path: str) -> str:
        query = select(events.c.payload).where(
            jsonpath_condition(events.c.payload, path, "postgresql")
        )
        return str(query.compile(dialect=postgresql.dialect()))

    assert "payload @? CAST(" in sql("$.items[*] ? (@.qty > 3)")
    assert "payload @@ CAST(" in sql("$.count > 3")
    assert "payload @@ CAST(" in sql("$.items.size() > 3")  # PostgreSQL-only syntax
    assert "payload @? CAST(" in sql("$.items.size()")


def test_sqlite_conditions_refuse_what_the_subset_cannot_evaluate() -> None:
    events = table("events", column("payload"))
    condition = jsonpath_condition(events.c.payload, "$.count > 3", "sqlite")
    assert "apphub_jsonpath_match(events.payload, ?) = ?" in str(
        condition.compile(dialect=sqlite.dialect())
    )
    with pytest.raises(JsonPathError, match="not supported on SQLite"):
        jsonpath_condition(events.c.payload, "$.items.size() > 3", "sqlite")
    with pytest.raises(JsonPathError, match="longer than"):
        jsonpath_condition(events.c.payload, "$" + ".a" * MAX_LENGTH, "postgresql")


def test_the_sqlite_function_tolerates_bad_payloads() -> None:
    connection = sqlite3.connect(":memory:")
    try:
        register_sqlite_jsonpath(connection)
        rows = ["not json", None, json.dumps({"count": 5})]
        found = [
            connection.execute("SELECT apphub_jsonpath_match(?, '$.count > 3')", (row,)).fetchone()
            for row in rows
        ]
        assert found == [(0,), (0,), (1,)]
    finally:
        connection.close()
