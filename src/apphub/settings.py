"""Settings from the environment, in one typed object. A bad value names its variable."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apphub.domain.ratelimits import RateLimit, parse_rate_limits
from apphub.security import ALL_SCOPES, SCOPES, OperatorToken, Principal

INLINE = "inline"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str = INLINE
    host: str = "127.0.0.1"
    port: int = 4000
    operator_tokens: tuple[OperatorToken, ...] | None = None
    auth_disabled: bool = False
    data_dir: Path = field(default_factory=lambda: Path(".apphub"))
    log_level: str = "info"
    log_format: str = "console"
    heartbeat_timeout_ms: int = 60_000
    run_concurrency: int = 50
    job_concurrency: int = 10
    reconcile_interval_ms: int = 15_000
    event_rate_limits: tuple[RateLimit, ...] = ()
    event_queue_name: str = "apphub_event_ingress_queue"
    event_ingress_concurrency: int = 5
    event_retention_days: int = 30
    materializer_base_backoff_ms: int = 120_000
    materializer_max_backoff_ms: int = 1_800_000
    materializer_refresh_interval_ms: int = 600_000
    """How often the materializer rebuilds its asset graph from scratch; 0 = never."""
    service_health_interval_ms: int = 30_000
    service_health_timeout_ms: int = 5_000
    trigger_error_threshold: int = 5
    """Failed deliveries of a trigger within the error window that pause it."""
    trigger_error_window_ms: int = 300_000
    trigger_pause_ms: int = 300_000

    @property
    def token_file(self) -> Path:
        return self.data_dir / "operator-token"

    @property
    def inline(self) -> bool:
        """True when queues and fan-out stay in this process (no Redis)."""
        return self.redis_url == INLINE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("APPHUB_DATA_DIR") or ".apphub")
        return cls(
            database_url=_database_url(env.get("APPHUB_DATABASE_URL"), data_dir),
            redis_url=_redis_url(env.get("REDIS_URL")),
            host=_host(env.get("APPHUB_HOST")),
            port=_port(env.get("APPHUB_PORT")),
            operator_tokens=_operator_tokens(env.get("APPHUB_OPERATOR_TOKENS")),
            auth_disabled=_flag("APPHUB_AUTH_DISABLED", env.get("APPHUB_AUTH_DISABLED")),
            data_dir=data_dir,
            log_level=_choice(
                "APPHUB_LOG_LEVEL",
                env.get("APPHUB_LOG_LEVEL"),
                "info",
                ("debug", "info", "warning", "error"),
            ),
            log_format=_choice(
                "APPHUB_LOG_FORMAT", env.get("APPHUB_LOG_FORMAT"), "console", ("console", "json")
            ),
            heartbeat_timeout_ms=_integer(env, "APPHUB_HEARTBEAT_TIMEOUT_MS", 60_000, 1000),
            run_concurrency=_integer(env, "APPHUB_RUN_CONCURRENCY", 50, 1),
            job_concurrency=_integer(env, "APPHUB_JOB_CONCURRENCY", 10, 1),
            reconcile_interval_ms=_integer(env, "APPHUB_RECONCILE_INTERVAL_MS", 15_000, 100),
            event_rate_limits=_rate_limits(env.get("EVENT_SOURCE_RATE_LIMITS")),
            event_queue_name=_name("APPHUB_EVENT_QUEUE_NAME", env.get("APPHUB_EVENT_QUEUE_NAME")),
            event_ingress_concurrency=_integer(env, "EVENT_INGRESS_CONCURRENCY", 5, 1),
            event_retention_days=_integer(env, "APPHUB_EVENT_RETENTION_DAYS", 30, 1),
            **_materializer(env),
            service_health_interval_ms=_integer(env, "SERVICE_HEALTH_INTERVAL_MS", 30_000, 100),
            service_health_timeout_ms=_integer(env, "SERVICE_HEALTH_TIMEOUT_MS", 5_000, 100),
            trigger_error_threshold=_integer(env, "EVENT_TRIGGER_ERROR_THRESHOLD", 5, 1),
            trigger_error_window_ms=_integer(env, "EVENT_TRIGGER_ERROR_WINDOW_MS", 300_000, 1),
            trigger_pause_ms=_integer(env, "EVENT_TRIGGER_PAUSE_MS", 300_000, 1),
        )


def _materializer(env: Mapping[str, str]) -> dict[str, int]:
    base = _integer(env, "ASSET_MATERIALIZER_BASE_BACKOFF_MS", 120_000, 1)
    ceiling = _integer(env, "ASSET_MATERIALIZER_MAX_BACKOFF_MS", 1_800_000, 1)
    if ceiling < base:
        raise SettingsError(
            f"ASSET_MATERIALIZER_MAX_BACKOFF_MS ({ceiling}) must not be below "
            f"ASSET_MATERIALIZER_BASE_BACKOFF_MS ({base})"
        )
    return {
        "materializer_base_backoff_ms": base,
        "materializer_max_backoff_ms": ceiling,
        "materializer_refresh_interval_ms": _integer(
            env, "ASSET_MATERIALIZER_REFRESH_INTERVAL_MS", 600_000, 0
        ),
    }


def _name(variable: str, raw: str | None) -> str:
    if raw is None or raw == "":
        return "apphub_event_ingress_queue"
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", raw):
        raise SettingsError(f"{variable} must be 1-200 characters of letters, digits, _.:-")
    return raw


def _database_url(raw: str | None, data_dir: Path) -> str:
    if not raw:
        return f"sqlite+aiosqlite:///{data_dir / 'apphub.db'}"
    for prefix, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if raw.startswith(prefix):
            return driver + raw.removeprefix(prefix)
    if raw.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return raw
    raise SettingsError(
        "APPHUB_DATABASE_URL must be a postgresql+asyncpg:// or sqlite+aiosqlite:// URL"
    )


def _redis_url(raw: str | None) -> str:
    if not raw or raw == INLINE:
        return INLINE
    if raw.startswith(("redis://", "rediss://", "unix://")):
        return raw
    raise SettingsError("REDIS_URL must be 'inline' or a redis://, rediss:// or unix:// URL")


def _host(raw: str | None) -> str:
    if raw is None:
        return "127.0.0.1"
    if not raw.strip():
        raise SettingsError("APPHUB_HOST must not be empty")
    return raw.strip()


def _port(raw: str | None) -> int:
    if raw is None or raw == "":
        return 4000
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise SettingsError(f"APPHUB_PORT must be an integer from 1 to 65535, got {raw!r}")
    return port


def _rate_limits(raw: str | None) -> tuple[RateLimit, ...]:
    try:
        return parse_rate_limits(raw)
    except ValueError as error:
        raise SettingsError(
            f"EVENT_SOURCE_RATE_LIMITS{error}"
            if str(error).startswith("[")
            else f"EVENT_SOURCE_RATE_LIMITS {error}"
        ) from None


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise SettingsError(f"{name} must be an integer of at least {minimum}, got {raw!r}")
    return value


def _flag(name: str, raw: str | None) -> bool:
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {raw!r}")


def _choice(name: str, raw: str | None, default: str, allowed: tuple[str, ...]) -> str:
    value = (raw or default).strip().lower()
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return value


def _operator_tokens(raw: str | None) -> tuple[OperatorToken, ...] | None:
    if raw is None or not raw.strip():
        return None
    name = "APPHUB_OPERATOR_TOKENS"
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as error:
        raise SettingsError(f"{name} is not valid JSON: {error.msg}") from None
    if not isinstance(entries, list) or not entries:
        raise SettingsError(f"{name} must be a non-empty JSON list of token objects")
    return tuple(_operator_token(name, index, entry) for index, entry in enumerate(entries))


def _operator_token(name: str, index: int, entry: Any) -> OperatorToken:
    where = f"{name}[{index}]"
    if not isinstance(entry, dict):
        raise SettingsError(f"{where} must be an object with token, subject and scopes")
    token, subject, scopes = entry.get("token"), entry.get("subject"), entry.get("scopes")
    if not isinstance(token, str) or not token:
        raise SettingsError(f"{where}.token must be a non-empty string")
    if not isinstance(subject, str) or not subject:
        raise SettingsError(f"{where}.subject must be a non-empty string")
    if scopes == ALL_SCOPES:
        return OperatorToken(token, Principal(subject, None))
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        raise SettingsError(f'{where}.scopes must be "*" or a list of scope names')
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise SettingsError(
            f"{where}.scopes has unknown scope(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(SCOPES))}"
        )
    return OperatorToken(token, Principal(subject, frozenset(scopes)))
