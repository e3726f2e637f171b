"""Evaluating the tree against a document, with PostgreSQL's lax-mode rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from apphub.domain.jsonpath.errors import _INT4, MAX_STEPS, JsonPathError
from apphub.domain.jsonpath.tree import (
    _AnyElement,
    _AnyMember,
    _Bound,
    _Compare,
    _Const,
    _Current,
    _Exists,
    _Expr,
    _IsUnknown,
    _LikeRegex,
    _Logic,
    _Member,
    _Not,
    _Predicate,
    _Root,
    _StartsWith,
    _Step,
    _Subscripts,
)

# ------------------------------------------------------------------------------- evaluator


_END = object()


class _EvalError(Exception):
    """A non-structural error (a subscript out of integer range): the predicate is unknown."""


class _Budget:
    """Counts evaluation steps so a costly path on a large document stops instead of hanging."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.left = MAX_STEPS

    def tick(self, count: int = 1) -> None:
        self.left -= count
        if self.left < 0:
            raise JsonPathError(f"jsonPath: evaluation exceeded {MAX_STEPS} steps")


def _evaluate(expr: _Expr, current: Any, budget: _Budget) -> Iterator[Any]:
    """The items `expr` selects, lazily and in PostgreSQL's order."""
    if isinstance(expr, _Root):
        yield budget.root
    elif isinstance(expr, _Current):
        yield current
    elif isinstance(expr, _Const):
        yield expr.value
    else:
        yield from _walk(_evaluate(expr.base, current, budget), expr.steps, budget)


def _walk(starts: Iterator[Any], steps: tuple[_Step, ...], budget: _Budget) -> Iterator[Any]:
    """Depth-first over the accessors with an explicit stack (no recursion per accessor)."""
    stack: list[tuple[int, Iterator[Any]]] = [(0, starts)]
    while stack:
        depth, items = stack[-1]
        item = next(items, _END)
        if item is _END:
            stack.pop()
            continue
        budget.tick()
        if depth == len(steps):
            yield item
        else:
            stack.append((depth + 1, _apply(steps[depth], item, budget, True)))


def _apply(step: _Step, item: Any, budget: _Budget, unwrap: bool) -> Iterator[Any]:
    """One accessor on one item; lax mode unwraps arrays one level for member and filter."""
    if isinstance(step, _AnyElement):
        yield from item if isinstance(item, list) else (item,)
    elif isinstance(step, _Subscripts):
        yield from _subscripts(step, item)
    elif unwrap and isinstance(item, list):
        for element in item:
            yield from _apply(step, element, budget, False)
    elif isinstance(step, _Member):
        if isinstance(item, dict) and step.name in item:
            yield item[step.name]
    elif isinstance(step, _AnyMember):
        if isinstance(item, dict):
            yield from item.values()
    elif _truth(step.condition, item, budget) is True:
        yield item


def _subscripts(step: _Subscripts, item: Any) -> Iterator[Any]:
    elements = item if isinstance(item, list) else [item]
    last = len(elements) - 1
    for low, high in step.ranges:
        start, stop = max(_index(low, last), 0), min(_index(high, last), last)
        yield from elements[start : stop + 1] if start <= stop else ()


def _index(bound: _Bound, last: int) -> int:
    value = (last if bound.from_last else 0) + bound.offset
    if not -_INT4 < value < _INT4:
        raise _EvalError("jsonpath array subscript is out of integer range")
    return int(value)


def _truth(predicate: _Predicate, current: Any, budget: _Budget) -> bool | None:
    """Three-valued result of a predicate: True, False or None (unknown)."""
    if isinstance(predicate, _Logic):
        return _logic(predicate, current, budget)
    if isinstance(predicate, _Not):
        value = _truth(predicate.operand, current, budget)
        return None if value is None else not value
    if isinstance(predicate, _IsUnknown):
        return _truth(predicate.operand, current, budget) is None
    if isinstance(predicate, _Exists):
        try:
            return next(_evaluate(predicate.path, current, budget), _END) is not _END
        except _EvalError:
            return None
    try:
        left = _operand(_left_of(predicate), current, budget)
        if isinstance(predicate, _Compare):
            right = _operand(predicate.right, current, budget)
            budget.tick(len(left) * len(right))
            pairs = (_compare(predicate.operator, a, b) for a in left for b in right)
            return _existential(pairs)
    except _EvalError:
        return None
    return _existential(_text_test(predicate, item) for item in left)


def _left_of(predicate: _Compare | _LikeRegex | _StartsWith) -> _Expr:
    return predicate.left if isinstance(predicate, _Compare) else predicate.operand


def _logic(predicate: _Logic, current: Any, budget: _Budget) -> bool | None:
    left = _truth(predicate.left, current, budget)
    if predicate.operator == "&&":
        if left is False:
            return False
        right = _truth(predicate.right, current, budget)
        return left if right is True else right
    if left is True:
        return True
    right = _truth(predicate.right, current, budget)
    return left if right is False else right


def _existential(results: Iterator[bool | None]) -> bool | None:
    """Lax mode: true if any pair is true, else unknown if any pair is unknown, else false."""
    unknown = False
    for result in results:
        if result is True:
            return True
        unknown = unknown or result is None
    return None if unknown else False


def _operand(expr: _Expr, current: Any, budget: _Budget) -> list[Any]:
    """A comparison operand's items, with arrays unwrapped one level (lax mode)."""
    items: list[Any] = []
    for item in _evaluate(expr, current, budget):
        if isinstance(item, list):
            budget.tick(len(item))
            items.extend(item)
        else:
            items.append(item)
    return items


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "?"


def _compare(operator: str, left: Any, right: Any) -> bool | None:
    kinds = (_kind(left), _kind(right))
    if kinds[0] != kinds[1]:
        if "null" in kinds:
            return operator == "!="
        return None
    if kinds[0] in {"array", "object", "?"}:
        return None
    if kinds[0] == "number":
        left, right = _exact(left), _exact(right)
    order = 0 if kinds[0] == "null" else (left > right) - (left < right)
    return _ORDER_TESTS[operator](order)


_ORDER_TESTS: dict[str, Callable[[int], bool]] = {
    "==": lambda order: order == 0,
    "!=": lambda order: order != 0,
    "<": lambda order: order < 0,
    "<=": lambda order: order <= 0,
    ">": lambda order: order > 0,
    ">=": lambda order: order >= 0,
}


def _exact(number: int | float | Decimal) -> int | Decimal:
    """Floats compare as the decimal text JSON serialises them to, as PostgreSQL reads it."""
    return Decimal(repr(number)) if isinstance(number, float) else number


def _text_test(predicate: _LikeRegex | _StartsWith, item: Any) -> bool | None:
    if not isinstance(item, str):
        return None
    if isinstance(predicate, _StartsWith):
        return item.startswith(predicate.prefix)
    return predicate.pattern.search(item) is not None
