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
