"""SQL/JSON path (PostgreSQL `jsonpath`, lax mode) for the event log's `jsonPath` filter.

PostgreSQL evaluates the whole language itself; this module evaluates a documented subset in
Python so that SQLite gives PostgreSQL's answers. A *path* matches when it selects at least one
item (`payload @? path`); a *predicate* (top level is a comparison, `&&`, `||`, `!`,
`exists(...)`, `like_regex`, `starts with` or `is unknown`) matches when it is true
(`payload @@ path`); false and unknown match nothing.

Supported subset (lax mode; an optional `lax` prefix is accepted):
- `$`; `@` inside filters; `.name`, `."quoted name"`, `.*`; `[*]`, `[n]`, `[n, m]`,
  `[n to m]` with numbers, `last`, `last - n` or `last + n` as bounds (truncated toward zero;
  out-of-range indexes select nothing); `( path )` followed by accessors; `? ( predicate )`.
- `== != <> < <= > >=`, existential over both sides (arrays unwrap one level); numbers compare
  numerically, strings by code point; other type mixes, objects and arrays are unknown, except
  that null equals only null (and `!=` anything else); `&& || !` three-valued;
  `(predicate) is unknown`; `exists ( path )`; `like_regex "re" flag "imsq"`; `starts with "s"`.
- literals: numbers (`1`, `-2.5`, `.5`, `1e3`), strings with escapes (`\\n`, `\\xNN`,
  `\\uNNNN`, `\\u{N}`, surrogate pairs), `true`, `false`, `null`.
Not supported on SQLite (PostgreSQL accepts them; the error says "not supported on SQLite"):
`strict`, `$variables`, arithmetic, item methods (`.size()`, ...), `.**`, accessors after a
literal or a parenthesized predicate, non-numeric subscripts, comments, backslashes outside
strings.

Differences from PostgreSQL: `like_regex` runs Python `re` on a checked translation of the
POSIX pattern (`.` and `[^...]` stop at newlines unless "s"; `^`/`$` only at the ends unless
"m"; `\\y \\Y \\m \\M` become Python word boundaries, `\\b` stays a backspace). Refused
as not supported: a `{` that does not start a bound, POSIX classes (`[[:alpha:]]`), `(?`
constructs other than `(?: (?= (?! (?<= (?<!`, escapes other than punctuation and
`\\d \\D \\s \\S \\w \\W \\A \\Z \\a \\n \\t \\r \\f \\v` (so back references),
possessive quantifiers, and a group that holds a quantifier or `|` repeated by anything but
`?` (catastrophic backtracking; polynomial backtracking, as in `a*a*a*b`, remains possible). Character classes and case folding follow Python's Unicode
rules. Floats in a Python document compare as the decimal text JSON gives them. An evaluation
that passes MAX_STEPS raises JsonPathError.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

MAX_LENGTH = 512
MAX_DEPTH = 50
MAX_STEPS = 200_000
_INT4 = 2**31

__all__ = ["CompiledPath", "JsonPathError", "compile_path", "looks_like_predicate"]


class JsonPathError(ValueError):
    """A jsonPath that cannot be parsed, is not supported on SQLite, or costs too much."""


# --------------------------------------------------------------------------------- tokens

_SPECIAL = set('?%$.[]{}()|&!=<>@#,*:-+/\\" \t\n\r\f')
_WHITESPACE = " \t\n\r\f"
_OPERATORS = ("==", "!=", "<>", "<=", ">=", "&&", "||", "**", "<", ">", "!", "(", ")", "[", "]")
_SINGLE = set(",?.*-+/%")
_NUMBER = re.compile(
    r"(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
)
_DIGITS = set("0123456789")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "op", "ident", "string", "number", "end"
    text: str
    position: int
    value: Any = None


def _error(message: str, position: int) -> JsonPathError:
    return JsonPathError(f"jsonPath: {message} at position {position + 1}")


def _unsupported(what: str, position: int) -> JsonPathError:
    return _error(f"{what} is not supported on SQLite", position)


def _is_ident_char(char: str) -> bool:
    return char not in _SPECIAL


def _tokenize(text: str) -> list[_Token]:
    """Split `text` into tokens with PostgreSQL's lexical rules for the subset."""
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in _WHITESPACE:
            i += 1
        elif char == '"':
            value, end = _scan_string(text, i)
            tokens.append(_Token("string", text[i:end], i, value))
            i = end
        elif char in _DIGITS or (char == "." and text[i + 1 : i + 2] in _DIGITS):
            tokens.append(_scan_number(text, i))
            i += len(tokens[-1].text)
        elif (
            char == "$"
            and i + 1 < len(text)
            and (text[i + 1] == '"' or _is_ident_char(text[i + 1]))
        ):
            raise _unsupported("a variable ($name)", i)
        elif char == "\\":
            raise _unsupported("a backslash escape outside a string", i)
        elif char == "/" and text[i + 1 : i + 2] == "*":
            raise _unsupported("a comment", i)
        elif char in "$@":
            tokens.append(_Token("op", char, i))
            i += 1
        elif _ident_at(text, i):
            end = i
            while end < len(text) and _is_ident_char(text[end]):
                end += 1
            tokens.append(_Token("ident", text[i:end], i))
            i = end
        else:
            operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if operator is None and char not in _SINGLE:
                raise _error(f"unexpected character {char!r}", i)
            operator = operator or char
            tokens.append(_Token("op", operator, i))
            i += len(operator)
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _ident_at(text: str, i: int) -> bool:
    return _is_ident_char(text[i]) and text[i] not in _DIGITS


def _scan_number(text: str, start: int) -> _Token:
    match = _NUMBER.match(text, start)
    assert match is not None
    end = match.end()
    if end < len(text) and _is_ident_char(text[end]):
        raise _error("trailing junk after numeric literal", start)
    literal = match.group()
    value: int | Decimal = int(literal) if literal.isdigit() else Decimal(literal)
    return _Token("number", literal, start, value)


def _scan_string(text: str, start: int) -> tuple[str, int]:
    """Read a double-quoted string starting at `start`; return its value and end offset."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return "".join(out), i + 1
        if char != "\\":
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(text):
            break
        code, i = _scan_escape(text, i)
        out.append(code)
    raise _error("unterminated string", start)


def _scan_escape(text: str, i: int) -> tuple[str, int]:
    kind = text[i + 1]
    if kind in _ESCAPES:
        return _ESCAPES[kind], i + 2
    if kind == "x":
        digits = text[i + 2 : i + 4]
        if len(digits) != 2 or not _is_hex(digits):
            raise _error("invalid hex character sequence", i)
        return _code_point(int(digits, 16), i), i + 4
    if kind != "u":
        return kind, i + 2
    code, end = _scan_unicode(text, i)
    if 0xD800 <= code < 0xDC00 and text.startswith("\\u", end):
        low, after = _scan_unicode(text, end)
        if 0xDC00 <= low < 0xE000:
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), after
    return _code_point(code, i), end


def _scan_unicode(text: str, i: int) -> tuple[int, int]:
    if text[i + 2 : i + 3] == "{":
        close = text.find("}", i + 3)
        digits = text[i + 3 : close] if close > 0 else ""
        if not 1 <= len(digits) <= 6 or not _is_hex(digits):
            raise _error("invalid unicode sequence", i)
        return int(digits, 16), close + 1
    digits = text[i + 2 : i + 6]
    if len(digits) != 4 or not _is_hex(digits):
        raise _error("invalid unicode sequence", i)
    return int(digits, 16), i + 6


def _is_hex(digits: str) -> bool:
    return all(char in "0123456789abcdefABCDEF" for char in digits)


def _code_point(code: int, i: int) -> str:
    if code == 0 or 0xD800 <= code < 0xE000 or code > 0x10FFFF:
        raise _error("unsupported Unicode escape sequence", i)
    return chr(code)


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


# ----------------------------------------------------------------------------------- regex

_REGEX_ESCAPES = {"y": r"\b", "Y": r"\B", "m": r"\b(?=\w)", "M": r"\b(?<=\w)", "b": r"\x08"}
_REGEX_KEPT = set("dDsSwWAZantrfv")
_REGEX_CONSTRAINTS = set("yYmMAZ")
_LOOKAROUND = ("(?:", "(?=", "(?!", "(?<=", "(?<!")
_BOUND = re.compile(r"\{\d+(?:,\d*)?\}")


def _compile_regex(pattern: str, flags: str, position: int) -> re.Pattern[str]:
    """Compile a like_regex pattern with Python `re`, keeping PostgreSQL's flag meanings."""
    unknown = set(flags) - set("imsqx")
    if unknown:
        raise _error(f"unrecognized like_regex flag {sorted(unknown)[0]!r}", position)
    if "x" in flags:
        raise _error('like_regex flag "x" is not implemented (nor by PostgreSQL)', position)
    options = re.IGNORECASE if "i" in flags else 0
    if "q" in flags:
        return re.compile(re.escape(pattern), options)
    options |= (re.DOTALL if "s" in flags else 0) | (re.MULTILINE if "m" in flags else 0)
    source = _RegexTranslator(pattern, "s" not in flags, "m" in flags, position).translate()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return re.compile(source, options)
    except (re.error, Warning) as error:
        raise _error(f"invalid regular expression ({error})", position) from None


class _RegexTranslator:
    """Rewrite a POSIX ARE pattern into Python `re` syntax, refusing what would differ."""

    def __init__(self, pattern: str, newline_stop: bool, multiline: bool, position: int) -> None:
        self.pattern = pattern
        self.newline_stop = newline_stop
        self.multiline = multiline
        self.position = position
        self.out: list[str] = []
        self.groups: list[tuple[bool, bool]] = []  # per open group: (lookaround, backtracks)
        self.previous = "start"  # start | atom | constraint | quantified | nested

    def refuse(self, what: str) -> JsonPathError:
        return _unsupported(f"{what} in like_regex", self.position)

    def translate(self) -> str:
        i = 0
        while i < len(self.pattern):
            i = self.token(i)
        return "".join(self.out)

    def token(self, i: int) -> int:
        char = self.pattern[i]
        bound = _BOUND.match(self.pattern, i)
        if char in "*+?" or bound:
            return self.quantifier(i, bound.end() if bound else i + 1)
        if char == "\\":
            return self.escape(i)
        if char == "[":
            return self.bracket(i)
        if char == "(":
            return self.open_group(i)
        if char == "{":
            raise self.refuse("a '{' that does not start a {m,n} bound")
        self.previous = "constraint" if char in "^$" else "start" if char == "|" else "atom"
        if char == ")" and self.groups:
            self.close_group()
        if char == "|" and self.groups:
            self.groups[-1] = (self.groups[-1][0], True)
        self.out.append(r"\Z" if char == "$" and not self.multiline else char)
        return i + 1

    def close_group(self) -> None:
        lookaround, backtracks = self.groups.pop()
        if backtracks and self.groups:
            self.groups[-1] = (self.groups[-1][0], True)
        self.previous = "constraint" if lookaround else "nested" if backtracks else "atom"

    def quantifier(self, start: int, end: int) -> int:
        if self.previous in {"start", "constraint", "quantified"}:
            raise _error("invalid regular expression (quantifier operand invalid)", self.position)
        if self.previous == "nested" and self.pattern[start:end] != "?":
            raise self.refuse("a repeated group that holds a quantifier or an alternation")
        if self.groups:
            self.groups[-1] = (self.groups[-1][0], True)
        if end < len(self.pattern) and self.pattern[end] == "?":
            end += 1
        elif end < len(self.pattern) and self.pattern[end] == "+":
            raise self.refuse("a possessive quantifier")
        self.out.append(self.pattern[start:end])
        self.previous = "quantified"
        return end

    def escape(self, i: int) -> int:
        kind = self.pattern[i + 1 : i + 2]
        if not kind:
            raise _error("invalid regular expression (trailing backslash)", self.position)
        if kind in _REGEX_ESCAPES:
            self.out.append(_REGEX_ESCAPES[kind])
        elif kind in _REGEX_KEPT or not kind.isalnum():
            self.out.append("\\" + kind)
        else:
            raise self.refuse(f"the escape \\{kind}")
        self.previous = "constraint" if kind in _REGEX_CONSTRAINTS else "atom"
        return i + 2

    def open_group(self, i: int) -> int:
        if self.pattern.startswith("(?", i):
            prefix = next((p for p in _LOOKAROUND if self.pattern.startswith(p, i)), None)
            if prefix is None:
                raise self.refuse("a '(?' construct other than (?: (?= (?! (?<= (?<!")
            self.out.append(prefix)
            self.groups.append((prefix != "(?:", False))
            self.previous = "start"
            return i + len(prefix)
        self.out.append("(")
        self.groups.append((False, False))
        self.previous = "start"
        return i + 1

    def bracket(self, i: int) -> int:
        i += 1
        parts = ["["]
        if self.pattern.startswith("^", i):
            parts.append("^\\n" if self.newline_stop else "^")
            i += 1
        if self.pattern.startswith("]", i):
            parts.append("\\]")
            i += 1
        while i < len(self.pattern) and self.pattern[i] != "]":
            char = self.pattern[i]
            if char == "[" and self.pattern[i + 1 : i + 2] in {":", "=", "."}:
                raise self.refuse("a POSIX bracket class ([:name:], [=x=], [.x.])")
            if char == "\\":
                kind = self.pattern[i + 1 : i + 2]
                if kind.isalnum() and kind not in "dswntrfv":
                    raise self.refuse(f"the escape \\{kind} in brackets")
                parts.append(self.pattern[i : i + 2])
                i += 2
                continue
            parts.append("\\" + char if char in "[&~|" else char)
            i += 1
        if i >= len(self.pattern):
            raise _error("invalid regular expression (brackets [] not balanced)", self.position)
        self.out.append("".join(parts) + "]")
        self.previous = "atom"
        return i + 1


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


# ------------------------------------------------------------------------------ public API


@dataclass(frozen=True, slots=True)
class CompiledPath:
    """A parsed jsonPath; `matches` is `document @@ path` for predicates, `@?` otherwise."""

    text: str
    _node: _Node

    @property
    def is_predicate(self) -> bool:
        return isinstance(self._node, _PREDICATES)

    def matches(self, document: Any) -> bool:
        """Whether the JSON value `document` (from json.loads) is selected by this path."""
        budget = _Budget(document)
        if isinstance(self._node, _PREDICATES):
            return _truth(self._node, document, budget) is True
        try:
            return next(_evaluate(self._node, document, budget), _END) is not _END
        except _EvalError:
            return False


def compile_path(text: str) -> CompiledPath:
    """Parse `text` once; raises JsonPathError naming the problem and its position."""
    if len(text) > MAX_LENGTH:
        raise JsonPathError(f"jsonPath: longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise JsonPathError("jsonPath: empty")
    return CompiledPath(text, _Parser(_tokenize(text)).parse())


_PREDICATE_WORDS = re.compile(r"(?<![.\w])(like_regex|starts\s+with|is\s+unknown)(?!\w)")


def looks_like_predicate(text: str) -> bool:
    """A textual guess for paths outside the subset: an operator outside any brackets."""
    body = _strip_parentheses(re.sub(r"^\s*(strict|lax)\s+", "", text).strip())
    if body.startswith("!") and not body.startswith("!="):
        return True
    if re.match(r"exists\s*\(", body):
        return True
    top = _top_level(body)
    return bool(re.search(r"==|!=|<>|<|>|&&|\|\|", top) or _PREDICATE_WORDS.search(top))


def _top_level(text: str) -> str:
    """`text` outside strings, with everything inside (), [] and {} blanked."""
    out: list[str] = []
    depth = 0
    for char in _top_level_chars(text):
        depth += char in "([{"
        out.append(char if depth == 0 else " ")
        depth = max(depth - (char in ")]}"), 0)
    return "".join(out)


def _top_level_chars(text: str) -> str:
    """`text` with each double-quoted string (escapes included) replaced by a space."""
    return re.sub(r'"(?:[^"\\]|\\.)*"?', " ", text)


def _strip_parentheses(text: str) -> str:
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    """Whether the parentheses outside strings never close more than they opened."""
    depth = 0
    for char in _top_level_chars(text):
        depth += 1 if char == "(" else -1 if char == ")" else 0
        if depth < 0:
            return False
    return depth == 0
