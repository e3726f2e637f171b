"""Recursive descent over the tokens, to the tree."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from apphub.domain.jsonpath.errors import MAX_DEPTH, JsonPathError
from apphub.domain.jsonpath.regex import _compile_regex
from apphub.domain.jsonpath.tokens import _error, _Token, _unsupported
from apphub.domain.jsonpath.tree import (
    _COMPARISONS,
    _PREDICATES,
    _AnyElement,
    _AnyMember,
    _Bound,
    _Chain,
    _Compare,
    _Const,
    _Current,
    _Exists,
    _Expr,
    _Filter,
    _IsUnknown,
    _LikeRegex,
    _Logic,
    _Member,
    _Node,
    _Not,
    _Predicate,
    _Root,
    _StartsWith,
    _Step,
    _Subscripts,
)

# ---------------------------------------------------------------------------------- parser


class _Parser:
    """Recursive descent over the tokens; `depth` bounds nesting so hostile input stays cheap."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.filters = 0

    def peek(self, offset: int = 0) -> _Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.index += 1
        return token

    def at(self, text: str, kind: str = "op") -> bool:
        token = self.peek()
        return token.kind == kind and token.text == text

    def expect(self, text: str, what: str) -> _Token:
        if not self.at(text):
            raise self.unexpected(what)
        return self.take()

    def unexpected(self, expected: str) -> JsonPathError:
        token = self.peek()
        if token.kind == "op" and token.text in {"+", "-", "*", "/", "%"}:
            return _unsupported(f"arithmetic ({token.text!r})", token.position)
        found = "end of input" if token.kind == "end" else repr(token.text)
        return _error(f"expected {expected}, found {found}", token.position)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error(f"nesting deeper than {MAX_DEPTH} levels", self.peek().position)

    def parse(self) -> _Node:
        if self.at("strict", "ident"):
            raise _unsupported("strict mode", self.peek().position)
        if self.at("lax", "ident") and self.peek(1).kind != "end":
            self.take()
        node = self.disjunction()
        if self.peek().kind != "end":
            raise self.unexpected("end of input")
        return node

    def predicate(self, node: _Node, where: str) -> _Predicate:
        if not isinstance(node, _PREDICATES):
            raise _error(f"{where} must be a predicate (a comparison, exists, ...)", self.pos())
        return node

    def pos(self) -> int:
        return self.tokens[max(self.index - 1, 0)].position

    def disjunction(self) -> _Node:
        self.enter()
        node = self.conjunction()
        while self.at("||"):
            self.take()
            left = self.predicate(node, "the left side of ||")
            node = _Logic("||", left, self.predicate(self.conjunction(), "the right side of ||"))
        self.depth -= 1
        return node

    def conjunction(self) -> _Node:
        node = self.unary()
        while self.at("&&"):
            self.take()
            left = self.predicate(node, "the left side of &&")
            node = _Logic("&&", left, self.predicate(self.unary(), "the right side of &&"))
        return node

    def unary(self) -> _Node:
        if not self.at("!"):
            return self.comparison()
        self.take()
        if self.at("exists", "ident"):
            return _Not(self.exists())
        self.expect("(", "'(' or exists after '!'")
        inner = self.predicate(self.disjunction(), "the operand of '!'")
        self.expect(")", "')'")
        return _Not(inner)

    def exists(self) -> _Exists:
        self.take()
        self.expect("(", "'(' after exists")
        inner = self.disjunction()
        if isinstance(inner, _PREDICATES):
            raise _error("exists(...) takes a path, not a predicate", self.pos())
        self.expect(")", "')'")
        return _Exists(inner)

    def comparison(self) -> _Node:
        if self.at("exists", "ident") and self.peek(1).text == "(":
            return self.exists()
        left = self.operand()
        if isinstance(left, _PREDICATES):
            return left
        token = self.peek()
        if token.kind == "op" and token.text in _COMPARISONS:
            self.take()
            right = self.operand()
            if isinstance(right, _PREDICATES):
                raise _error("a comparison operand must be a path or a literal", self.pos())
            return _Compare("!=" if token.text == "<>" else token.text, left, right)
        if self.at("like_regex", "ident"):
            return self.like_regex(left)
        if self.at("starts", "ident"):
            self.take()
            self.expect_word("with")
            return _StartsWith(left, self.string("a string after starts with"))
        return left

    def expect_word(self, word: str) -> None:
        if not self.at(word, "ident"):
            raise self.unexpected(repr(word))
        self.take()

    def string(self, what: str) -> str:
        if self.peek().kind != "string":
            raise self.unexpected(what)
        value: str = self.take().value
        return value

    def like_regex(self, operand: _Expr) -> _LikeRegex:
        self.take()
        position = self.peek().position
        pattern = self.string("a pattern string after like_regex")
        flags = ""
        if self.at("flag", "ident"):
            self.take()
            flags = self.string("a flags string after flag")
        return _LikeRegex(operand, _compile_regex(pattern, flags, position))

    def operand(self) -> _Node:
        token = self.peek()
        if token.kind == "op" and token.text == "(":
            return self.parenthesized()
        if token.kind == "op" and token.text in {"$", "@"}:
            if token.text == "@" and not self.filters:
                raise _error("@ is only allowed inside a filter", token.position)
            self.take()
            return self.chain(_Root() if token.text == "$" else _Current())
        return self.literal()

    def parenthesized(self) -> _Node:
        self.take()
        inner = self.disjunction()
        self.expect(")", "')'")
        if isinstance(inner, _PREDICATES):
            if self.at("is", "ident"):
                self.take()
                self.expect_word("unknown")
                return _IsUnknown(inner)
            if self.peek().kind == "op" and self.peek().text in {".", "[", "?"}:
                raise _unsupported("an accessor after a parenthesized predicate", self.pos())
            return inner
        return self.chain(inner)

    def literal(self) -> _Const:
        token = self.take()
        if token.kind == "op" and token.text in {"+", "-"} and self.peek().kind == "number":
            number = self.take().value
            value: Any = -number if token.text == "-" else number
        elif token.kind in {"number", "string"}:
            value = token.value
        elif token.kind == "ident" and token.text in {"true", "false", "null"}:
            value = {"true": True, "false": False, "null": None}[token.text]
        else:
            self.index -= 1
            if token.kind == "ident" and token.text == "last":
                raise _error("last is allowed only in array subscripts", token.position)
            raise self.unexpected("a path or a literal")
        if self.peek().text in {".", "[", "?"} and self.peek().kind == "op":
            raise _unsupported("an accessor after a literal", self.peek().position)
        return _Const(value)

    def chain(self, base: _Expr) -> _Expr:
        steps: list[_Step] = []
        while self.peek().kind == "op" and self.peek().text in {".", "[", "?"}:
            steps.append(self.step())
        if not steps:
            return base
        return _Chain(base, tuple(steps))

    def step(self) -> _Step:
        token = self.take()
        if token.text == "[":
            return self.subscripts()
        if token.text == "?":
            return self.filter()
        return self.member()

    def member(self) -> _Step:
        token = self.take()
        if token.kind == "op" and token.text == "*":
            return _AnyMember()
        if token.kind == "op" and token.text == "**":
            raise _unsupported("the any-level accessor .**", token.position)
        if token.kind not in {"ident", "string"}:
            self.index -= 1
            raise self.unexpected("a member name after '.'")
        if self.at("("):
            raise _unsupported(f"the item method .{token.text}()", token.position)
        return _Member(token.text if token.kind == "ident" else token.value)

    def filter(self) -> _Filter:
        self.expect("(", "'(' after '?'")
        self.filters += 1
        condition = self.predicate(self.disjunction(), "a filter condition")
        self.filters -= 1
        self.expect(")", "')'")
        return _Filter(condition)

    def subscripts(self) -> _Step:
        if self.at("*"):
            self.take()
            self.expect("]", "']'")
            return _AnyElement()
        ranges: list[tuple[_Bound, _Bound]] = []
        while True:
            low = self.bound()
            high = low
            if self.at("to", "ident"):
                self.take()
                high = self.bound()
            ranges.append((low, high))
            if not self.at(","):
                break
            self.take()
        self.expect("]", "']' or ','")
        return _Subscripts(tuple(ranges))

    def bound(self) -> _Bound:
        if self.at("last", "ident"):
            self.take()
            if self.peek().text in {"+", "-"} and self.peek(1).kind == "number":
                sign = -1 if self.take().text == "-" else 1
                return _Bound(True, Decimal(sign * self.take().value))
            return _Bound(True, Decimal(0))
        sign = 1
        if self.peek().text in {"+", "-"} and self.peek(1).kind == "number":
            sign = -1 if self.take().text == "-" else 1
        if self.peek().kind != "number":
            if self.peek().kind == "end" or self.peek().text in {"]", ",", "to"}:
                raise self.unexpected("a subscript")
            raise _unsupported("a subscript other than a number or last [± number]", self.pos())
        return _Bound(False, Decimal(sign * self.take().value))
