"""`{{ path }}` templates: dot-path lookups into a scope, nothing else (no code runs).

A string that is exactly one template keeps the value's JSON type; templates inside other
text are stringified (null as empty text); a missing path resolves to null.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
MISSING = object()
"""What `walk` answers for a path that selects nothing (null is a value)."""


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Resolve every template in `value` (strings, and inside lists and objects)."""
    if isinstance(value, str):
        return render_string(value, scope)
    if isinstance(value, dict):
        return {key: render(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, scope) for item in value]
    return value


def render_string(text: str, scope: Mapping[str, Any]) -> Any:
    if "{{" not in text:
        return text
    whole = _TEMPLATE.fullmatch(text.strip())
    if whole is not None and text.strip() == text:
        return lookup(scope, whole.group(1))
    return _TEMPLATE.sub(lambda match: _as_text(lookup(scope, match.group(1))), text)


def lookup(scope: Any, path: str) -> Any:
    """The value at a dot path, or None. Keys that contain dots are matched greedily."""
    segments = [segment for segment in path.strip().split(".") if segment] if path else []
    if not segments:
        return None
    found = walk(scope, segments)
    return None if found is MISSING else found


def walk(current: Any, segments: Sequence[str]) -> Any:
    """The value the segments lead to through objects and list indexes, or MISSING."""
    while segments:
        if isinstance(current, Mapping):
            current, consumed = _mapping_step(current, segments)
        elif isinstance(current, list) and segments[0].isdigit():
            index = int(segments[0])
            current, consumed = (current[index], 1) if index < len(current) else (MISSING, 1)
        else:
            return MISSING
        if current is MISSING:
            return MISSING
        segments = segments[consumed:]
    return current


def _mapping_step(mapping: Mapping[str, Any], segments: Sequence[str]) -> tuple[Any, int]:
    """Try the longest run of segments that names a key (step ids may contain dots)."""
    for width in range(len(segments), 0, -1):
        key = ".".join(segments[:width])
        if key in mapping:
            return mapping[key], width
    return MISSING, 1


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def has_templates(value: Any) -> bool:
    if isinstance(value, str):
        return _TEMPLATE.search(value) is not None
    if isinstance(value, dict):
        return any(has_templates(item) for item in value.values())
    if isinstance(value, list):
        return any(has_templates(item) for item in value)
    return False
