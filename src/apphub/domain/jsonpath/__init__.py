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
`?` (catastrophic backtracking; polynomial backtracking, as in `a*a*a*b`, remains possible).
Character classes and case folding follow Python's Unicode rules. Floats in a Python document
compare as the decimal text JSON gives them. An evaluation that passes MAX_STEPS raises
JsonPathError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from apphub.domain.jsonpath.errors import MAX_DEPTH, MAX_LENGTH, MAX_STEPS, JsonPathError
from apphub.domain.jsonpath.evaluate import _END, _Budget, _EvalError, _evaluate, _truth
from apphub.domain.jsonpath.parser import _Parser
from apphub.domain.jsonpath.tokens import _tokenize
from apphub.domain.jsonpath.tree import _PREDICATES, _Node

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_STEPS",
    "CompiledPath",
    "JsonPathError",
    "compile_path",
    "looks_like_predicate",
]

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
