"""Liquid templates of event triggers (parameters, run keys, idempotency keys).

Templates are checked when a trigger is saved (syntax, unknown filters; with a sample event,
undefined variables) and rendered for each delivery. Rendering is bounded (loops, output,
nesting), has no file loader, and runs no code beyond Liquid's own tags and filters.

In a parameter template, a string that is exactly one output (`{{ event.payload.count }}`)
keeps the JSON type of the value; other strings render to text; an undefined variable
renders as nothing (null for a whole-value string). `json` is added to Liquid's filters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from liquid import BoundTemplate, Environment, StrictDefaultUndefined, Undefined, is_undefined
from liquid.exceptions import LiquidError

_WHOLE_OUTPUT = re.compile(r"^\{\{-?\s*(?P<expr>(?:(?!\}\}|\{\{|\{%).)+?)\s*-?\}\}$", re.DOTALL)
_TAGGED = re.compile(r"\{\{|\{%")


class TemplateProblem(ValueError):
    """A template that cannot be used; `message` says why in one line."""


def _json_filter(value: Any) -> str:
    """`{{ event.payload | json }}`: the value as compact JSON (undefined → null)."""
    return json.dumps(None if is_undefined(value) else value, separators=(",", ":"), default=str)


class _BoundedEnvironment(Environment):
    """Liquid with limits, so a template cannot loop or grow without end."""

    context_depth_limit = 30
    loop_iteration_limit = 1_000
    local_namespace_limit = 10_000
    output_stream_limit = 64 * 1024


def _environment(undefined: type[Undefined]) -> Environment:
    env = _BoundedEnvironment(undefined=undefined, strict_filters=True)
    env.filters["json"] = _json_filter
    return env


_LENIENT = _environment(Undefined)
_STRICT = _environment(StrictDefaultUndefined)


def _one_line(error: LiquidError) -> str:
    return str(error).splitlines()[0].strip()


def _parse(env: Environment, text: str) -> BoundTemplate:
    try:
        return env.from_string(text)
    except LiquidError as error:
        raise TemplateProblem(_one_line(error)) from None


def _render(env: Environment, text: str, scope: Mapping[str, Any]) -> str:
    try:
        return _parse(env, text).render(**scope)
    except LiquidError as error:
        raise TemplateProblem(_one_line(error)) from None


def as_template(expression: str) -> str:
    """An idempotency key expression: a bare path (`event.payload.key`) means its value."""
    return expression if _TAGGED.search(expression) else "{{ " + expression + " }}"


def template_strings(value: Any, where: str) -> list[tuple[str, str]]:
    """Every string inside a parameter template, with its field path (for error messages)."""
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, dict):
        found: list[tuple[str, str]] = []
        for key, item in value.items():
            found += template_strings(item, f"{where}.{key}")
        return found
    if isinstance(value, list):
        return [
            pair for i, item in enumerate(value) for pair in template_strings(item, f"{where}[{i}]")
        ]
    return []


def check_template(text: str) -> None:
    """Raise TemplateProblem for a syntax error or an unknown filter."""
    try:
        names = _parse(_LENIENT, text).filter_names()
    except LiquidError as error:
        raise TemplateProblem(_one_line(error)) from None
    unknown = sorted(set(names) - set(_LENIENT.filters))
    if unknown:
        raise TemplateProblem(f"unknown filter {unknown[0]!r}")


def check_against(text: str, scope: Mapping[str, Any]) -> None:
    """Raise TemplateProblem if rendering over `scope` meets an undefined variable."""
    _render(_STRICT, text, scope)


def render_text(text: str, scope: Mapping[str, Any]) -> str:
    return _render(_LENIENT, text, scope)


def render_value(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render every string of a parameter template; whole-value strings keep their type."""
    if isinstance(value, str):
        whole = _WHOLE_OUTPUT.match(value)
        if whole is None:
            return render_text(value, scope) if _TAGGED.search(value) else value
        rendered = render_text("{{ " + whole.group("expr") + " | json }}", scope)
        return json.loads(rendered) if rendered else None
    if isinstance(value, dict):
        return {key: render_value(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, scope) for item in value]
    return value
