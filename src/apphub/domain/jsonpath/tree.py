"""The parsed form of a jsonPath."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# ------------------------------------------------------------------------------------ tree


@dataclass(frozen=True, slots=True)
class _Root:
    pass


@dataclass(frozen=True, slots=True)
class _Current:
    pass


@dataclass(frozen=True, slots=True)
class _Const:
    value: Any


@dataclass(frozen=True, slots=True)
class _Member:
    name: str


@dataclass(frozen=True, slots=True)
class _AnyMember:
    pass


@dataclass(frozen=True, slots=True)
class _AnyElement:
    pass


@dataclass(frozen=True, slots=True)
class _Bound:
    from_last: bool
    offset: Decimal


@dataclass(frozen=True, slots=True)
class _Subscripts:
    ranges: tuple[tuple[_Bound, _Bound], ...]


@dataclass(frozen=True, slots=True)
class _Filter:
    condition: _Predicate


@dataclass(frozen=True, slots=True)
class _Chain:
    base: _Expr
    steps: tuple[_Step, ...]


@dataclass(frozen=True, slots=True)
class _Compare:
    operator: str
    left: _Expr
    right: _Expr


@dataclass(frozen=True, slots=True)
class _Logic:
    operator: str  # "&&" or "||"
    left: _Predicate
    right: _Predicate


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Predicate


@dataclass(frozen=True, slots=True)
class _IsUnknown:
    operand: _Predicate


@dataclass(frozen=True, slots=True)
class _Exists:
    path: _Expr


@dataclass(frozen=True, slots=True)
class _LikeRegex:
    operand: _Expr
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class _StartsWith:
    operand: _Expr
    prefix: str


_Expr = _Root | _Current | _Const | _Chain
_Step = _Member | _AnyMember | _AnyElement | _Subscripts | _Filter
_Predicate = _Compare | _Logic | _Not | _IsUnknown | _Exists | _LikeRegex | _StartsWith
_PREDICATES = (_Compare, _Logic, _Not, _IsUnknown, _Exists, _LikeRegex, _StartsWith)
_Node = _Expr | _Predicate
_COMPARISONS = {"==", "!=", "<>", "<", "<=", ">", ">="}
