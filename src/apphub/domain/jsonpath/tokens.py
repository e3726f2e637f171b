"""Splitting a jsonPath into tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from apphub.domain.jsonpath.errors import JsonPathError

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
