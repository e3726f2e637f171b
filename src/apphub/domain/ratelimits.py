"""Per-source rate limits for event ingress: over the limit, a source pauses; nothing is dropped.

`EVENT_SOURCE_RATE_LIMITS` is `[{source | "*", limit, intervalMs, pauseMs}]`. Events of a
source are counted in fixed windows of `intervalMs`; the event that would exceed `limit`
pauses the source for `pauseMs`, and every event of a paused source is deferred to the end
of the pause (then counted again). A rule for the exact source wins over `"*"`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class RateLimit:
    source: str
    limit: int
    interval_ms: int
    pause_ms: int

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "limit": self.limit,
            "intervalMs": self.interval_ms,
            "pauseMs": self.pause_ms,
        }


def parse_rate_limits(raw: str | None) -> tuple[RateLimit, ...]:
    """Read the env value; a bad one raises ValueError naming the entry and field."""
    if not raw or not raw.strip():
        return ()
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error.msg}") from None
    if not isinstance(entries, list):
        raise ValueError("must be a JSON list of {source, limit, intervalMs, pauseMs}")
    return tuple(_rule(index, entry) for index, entry in enumerate(entries))


def _rule(index: int, entry: Any) -> RateLimit:
    where = f"[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
        raise ValueError(f'{where} must be an object with a source (or "*")')
    numbers = {}
    for key, minimum in (("limit", 1), ("intervalMs", 1), ("pauseMs", 0)):
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{where}.{key} must be an integer of at least {minimum}")
        numbers[key] = value
    return RateLimit(entry["source"], numbers["limit"], numbers["intervalMs"], numbers["pauseMs"])


@dataclass
class _SourceWindow:
    started: datetime
    count: int = 0
    paused_until: datetime | None = None


@dataclass
class RateLimiter:
    """The state of every source's window; one per ingress process."""

    rules: tuple[RateLimit, ...]
    windows: dict[str, _SourceWindow] = field(default_factory=dict)

    def rule_for(self, source: str) -> RateLimit | None:
        exact = next((rule for rule in self.rules if rule.source == source), None)
        return exact or next((rule for rule in self.rules if rule.source == "*"), None)

    def admit(self, source: str, now: datetime) -> datetime | None:
        """None when the event may go on now; else when its source's pause ends."""
        rule = self.rule_for(source)
        if rule is None:
            return None
        window = self.windows.get(source)
        if window is None or now - window.started >= timedelta(milliseconds=rule.interval_ms):
            paused = window.paused_until if window else None
            window = _SourceWindow(started=now, paused_until=paused)
            self.windows[source] = window
        if window.paused_until is not None:
            if now < window.paused_until:
                return window.paused_until
            window.paused_until = None
            window.started, window.count = now, 0
        if window.count >= rule.limit:
            window.paused_until = now + timedelta(milliseconds=rule.pause_ms)
            return window.paused_until
        window.count += 1
        return None

    def paused(self, now: datetime) -> dict[str, datetime]:
        return {
            source: window.paused_until
            for source, window in self.windows.items()
            if window.paused_until is not None and window.paused_until > now
        }
