"""Retry policies: how often and how long to wait before a step or job tries again."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from apphub.domain.base import ApiModel

DelayMs = int


class RetryPolicy(ApiModel):
    """Without a policy nothing is retried; `maxAttempts` counts the first attempt too."""

    max_attempts: int = Field(default=1, ge=1, le=10)
    strategy: Literal["none", "fixed", "exponential"] = "fixed"
    initial_delay_ms: int = Field(default=1000, ge=0, le=86_400_000)
    max_delay_ms: int = Field(default=3_600_000, ge=0, le=86_400_000)
    jitter: float = Field(default=0.0, ge=0.0, le=1.0)


def retry_delay_ms(policy: RetryPolicy | None, failed_attempt: int, rand: float) -> int | None:
    """How long to wait before the next attempt, or None when the attempts are used up.

    `rand` in [0, 1) comes from the caller, so the rule stays a pure function.
    """
    if policy is None or failed_attempt >= policy.max_attempts:
        return None
    if policy.strategy == "none":
        return 0
    if policy.strategy == "fixed":
        base = policy.initial_delay_ms
    else:
        base = policy.initial_delay_ms * 2 ** (failed_attempt - 1)
    base = min(base, policy.max_delay_ms)
    spread = base * policy.jitter * (2 * rand - 1)
    return max(0, min(policy.max_delay_ms, round(base + spread)))
