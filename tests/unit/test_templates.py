"""The `{{ path }}` resolver: types kept, text stringified, missing is null, nothing executes."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from apphub.domain.templates import has_templates, lookup, render

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(string.printable, max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
keys = st.text(string.ascii_letters + "_-", min_size=1, max_size=10)


@given(keys, json_values)
def test_a_whole_template_keeps_the_json_type(key: str, value: Any) -> None:
    scope = {"shared": {key: value}}
    assert render(f"{{{{ shared.{key} }}}}", scope) == value


@given(keys, json_values, st.text(string.ascii_letters + " ", min_size=1, max_size=10))
def test_mixed_text_is_a_string(key: str, value: Any, prefix: str) -> None:
    rendered = render(f"{prefix}{{{{ shared.{key} }}}}", {"shared": {key: value}})
    assert isinstance(rendered, str)
    assert rendered.startswith(prefix)
    if isinstance(value, dict | list):
        assert json.loads(rendered[len(prefix) :]) == value


@given(json_values)
def test_values_without_templates_come_back_unchanged(value: Any) -> None:
    if not has_templates(value):
        assert render(value, {"anything": 1}) == value


@given(st.text(max_size=60))
def test_any_string_renders_without_error(text: str) -> None:
    rendered = render(text, {"parameters": {"a": 1}})
    assert rendered is None or isinstance(rendered, str | int)


def test_missing_paths_are_null_and_empty_in_text() -> None:
    assert render("{{ steps.nope.result }}", {"steps": {}}) is None
    assert render("hello {{ parameters.name }}!", {"parameters": {}}) == "hello !"


def test_nested_structures_and_list_indexes() -> None:
    scope = {"steps": {"seed": {"result": {"items": [10, 20, 30]}}}, "parameters": {"n": 2}}
    template = {"first": "{{ steps.seed.result.items.0 }}", "all": ["{{ parameters.n }}", "x"]}
    assert render(template, scope) == {"first": 10, "all": [2, "x"]}


def test_step_ids_with_dots_resolve() -> None:
    scope = {"steps": {"scan.v2": {"result": {"count": 3}}}}
    assert lookup(scope, "steps.scan.v2.result.count") == 3


def test_expressions_are_not_evaluated() -> None:
    scope = {"parameters": {"a": 1}}
    assert render("{{ __import__('os').getcwd() }}", scope) is None
    assert render("{{ parameters.a + 1 }}", scope) is None
