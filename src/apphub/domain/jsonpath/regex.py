"""`like_regex`: PostgreSQL's POSIX flavour, translated to Python `re` where it is safe."""

from __future__ import annotations

import re
import warnings

from apphub.domain.jsonpath.errors import JsonPathError
from apphub.domain.jsonpath.tokens import _error, _unsupported

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
