"""What a trigger does with an event: the contract's decision order, as pure functions.

Per event, in order: a paused trigger records a `skipped` delivery; predicates that fail
record nothing; an idempotency key seen within its TTL is `skipped`; a full throttle window
or `maxConcurrency` runs still active make it `throttled` (retried later, durably: when the
window has room, or after a backoff for concurrency, earlier when one of its runs ends);
else the run is launched. Repeated failures pause the trigger for a while.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from apphub.domain.retry import RetryPolicy, retry_delay_ms

THROTTLE_BACKOFF = RetryPolicy.model_validate(
    {
        "maxAttempts": 10,
        "strategy": "exponential",
        "initialDelayMs": 10_000,
        "maxDelayMs": 900_000,
        "jitter": 0.2,
    }
)
"""Throttled deliveries wait 10 s, 20 s, 40 s, … up to 15 minutes, ±20%."""

Outcome = Literal["skipped", "throttled", "launch"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The trigger settings the rules read."""

    throttle_window_ms: int | None = None
    throttle_count: int | None = None
    max_concurrency: int | None = None
    idempotency_ttl_ms: int = 86_400_000


@dataclass(slots=True)
class TriggerState:
    """What the rules need to know about a trigger now; updated as decisions are taken."""

    paused_until: datetime | None = None
    launches: list[datetime] = field(default_factory=list)
    """Launch times inside the throttle window, newest first (at most `throttleCount`)."""
    active_runs: int = 0
    seen_keys: dict[str, datetime] = field(default_factory=dict)
    """Idempotency keys of deliveries that launched or wait to, with when they were accepted
    inside the TTL (a key is a duplicate while that is less than the TTL ago)."""

    def note_launch(self, now: datetime, key: str | None) -> None:
        self.launches.insert(0, now)
        self.active_runs += 1
        self._accept(now, key)

    def note_waiting(self, now: datetime, key: str | None) -> None:
        self._accept(now, key)

    def _accept(self, now: datetime, key: str | None) -> None:
        """Only a key that is not a duplicate is accepted, so an earlier sighting it replaces
        has expired: the TTL now runs from this acceptance."""
        if key is not None:
            self.seen_keys[key] = now


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    retry_at: datetime | None = None
    """When a throttled delivery is tried again."""


def paused(state: TriggerState, now: datetime) -> bool:
    return state.paused_until is not None and state.paused_until > now


def throttle_backoff(attempts: int, now: datetime, rand: float) -> datetime:
    delay = retry_delay_ms(THROTTLE_BACKOFF, min(max(attempts, 1), 9), rand) or 0
    return now + timedelta(milliseconds=delay)


def window_frees_at(limits: Limits, state: TriggerState, now: datetime) -> datetime | None:
    """When the throttle window next has room, or None if it has room now (or no window)."""
    if limits.throttle_window_ms is None or limits.throttle_count is None:
        return None
    window = timedelta(milliseconds=limits.throttle_window_ms)
    inside = sorted((t for t in state.launches if t > now - window), reverse=True)
    if len(inside) < limits.throttle_count:
        return None
    return inside[limits.throttle_count - 1] + window


def decide(
    limits: Limits,
    state: TriggerState,
    key: str | None,
    now: datetime,
    *,
    attempts: int = 1,
    rand: float = 0.5,
    retry: bool = False,
) -> Verdict:
    """The outcome for an event whose predicates hold (or a throttled delivery's retry).

    A retry keeps its place: a pause postpones it (never drops it) and its key, already
    counted, is not checked again.
    """
    if paused(state, now):
        if retry:
            return Verdict("throttled", "paused", state.paused_until)
        return Verdict("skipped", "paused")
    if not retry and key is not None:
        first = state.seen_keys.get(key)
        if first is not None and first > now - timedelta(milliseconds=limits.idempotency_ttl_ms):
            return Verdict("skipped", "duplicate")
    frees_at = window_frees_at(limits, state, now)
    full = limits.max_concurrency is not None and state.active_runs >= limits.max_concurrency
    if full:
        return Verdict("throttled", "concurrency", throttle_backoff(attempts, now, rand))
    if frees_at is not None:  # the moment the window has room is known: try exactly then
        return Verdict("throttled", "window", frees_at)
    return Verdict("launch", "matched")


@dataclass(frozen=True, slots=True)
class PauseRule:
    threshold: int
    window_ms: int
    pause_ms: int


def after_failure(
    recent: list[datetime], now: datetime, rule: PauseRule
) -> tuple[list[datetime], datetime | None]:
    """Failures inside the window with this one; and the pause they cause, if they reach the
    threshold (the count then starts again)."""
    kept = [t for t in recent if t > now - timedelta(milliseconds=rule.window_ms)] + [now]
    if len(kept) >= rule.threshold:
        return [], now + timedelta(milliseconds=rule.pause_ms)
    return kept, None
