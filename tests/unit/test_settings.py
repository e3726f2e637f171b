"""Settings from the environment: defaults, and a bad value names its variable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from apphub.settings import Settings, SettingsError


def test_defaults_are_embedded_mode() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite+aiosqlite:///.apphub/apphub.db"
    assert settings.redis_url == "inline"
    assert settings.inline
    assert (settings.host, settings.port) == ("127.0.0.1", 4000)
    assert settings.operator_tokens is None
    assert settings.auth_disabled is False
    assert settings.token_file == Path(".apphub/operator-token")


def test_database_follows_the_data_dir_and_plain_urls_get_a_driver() -> None:
    assert Settings.from_env({"APPHUB_DATA_DIR": "/srv/hub"}).database_url == (
        "sqlite+aiosqlite:////srv/hub/apphub.db"
    )
    assert Settings.from_env({"APPHUB_DATABASE_URL": "postgresql://u@h/db"}).database_url == (
        "postgresql+asyncpg://u@h/db"
    )


def test_operator_tokens_parse_scopes() -> None:
    raw = json.dumps(
        [
            {"token": "a", "subject": "ops", "scopes": "*"},
            {"token": "b", "subject": "ci", "scopes": ["jobs:write", "jobs:run"]},
        ]
    )
    tokens = Settings.from_env({"APPHUB_OPERATOR_TOKENS": raw}).operator_tokens
    assert tokens is not None
    assert tokens[0].principal.allows("admin:write")
    assert tokens[1].principal.allows("jobs:run")
    assert not tokens[1].principal.allows("workflows:write")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"APPHUB_PORT": "http"}, "APPHUB_PORT"),
        ({"APPHUB_PORT": "70000"}, "APPHUB_PORT"),
        ({"APPHUB_HOST": "  "}, "APPHUB_HOST"),
        ({"APPHUB_DATABASE_URL": "mysql://x"}, "APPHUB_DATABASE_URL"),
        ({"REDIS_URL": "memcached://x"}, "REDIS_URL"),
        ({"APPHUB_AUTH_DISABLED": "maybe"}, "APPHUB_AUTH_DISABLED"),
        ({"APPHUB_OPERATOR_TOKENS": "{not json"}, "APPHUB_OPERATOR_TOKENS"),
        ({"APPHUB_OPERATOR_TOKENS": "[]"}, "APPHUB_OPERATOR_TOKENS"),
        (
            {"APPHUB_OPERATOR_TOKENS": '[{"token": "", "subject": "x", "scopes": "*"}]'},
            "APPHUB_OPERATOR_TOKENS[0].token",
        ),
        (
            {"APPHUB_OPERATOR_TOKENS": '[{"token": "t", "subject": "x", "scopes": ["jobs:fly"]}]'},
            "APPHUB_OPERATOR_TOKENS[0].scopes",
        ),
        ({"APPHUB_LOG_FORMAT": "xml"}, "APPHUB_LOG_FORMAT"),
        ({"APPHUB_HEARTBEAT_TIMEOUT_MS": "soon"}, "APPHUB_HEARTBEAT_TIMEOUT_MS"),
        ({"APPHUB_RUN_CONCURRENCY": "0"}, "APPHUB_RUN_CONCURRENCY"),
        ({"EVENT_SOURCE_RATE_LIMITS": "{}"}, "EVENT_SOURCE_RATE_LIMITS"),
        ({"APPHUB_EVENT_QUEUE_NAME": "a queue"}, "APPHUB_EVENT_QUEUE_NAME"),
        ({"ASSET_MATERIALIZER_BASE_BACKOFF_MS": "-5"}, "ASSET_MATERIALIZER_BASE_BACKOFF_MS"),
        ({"ASSET_MATERIALIZER_REFRESH_INTERVAL_MS": "x"}, "ASSET_MATERIALIZER_REFRESH_INTERVAL_MS"),
        (
            {
                "ASSET_MATERIALIZER_BASE_BACKOFF_MS": "5000",
                "ASSET_MATERIALIZER_MAX_BACKOFF_MS": "10",
            },
            "ASSET_MATERIALIZER_MAX_BACKOFF_MS",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match="^" + re.escape(variable)):
        Settings.from_env(env)


def test_tuning_variables_are_read() -> None:
    settings = Settings.from_env(
        {
            "APPHUB_HEARTBEAT_TIMEOUT_MS": "3000",
            "APPHUB_RUN_CONCURRENCY": "7",
            "APPHUB_JOB_CONCURRENCY": "3",
            "APPHUB_RECONCILE_INTERVAL_MS": "1000",
            "EVENT_SOURCE_RATE_LIMITS": json.dumps(
                [{"source": "svc", "limit": 2, "intervalMs": 1000, "pauseMs": 0}]
            ),
            "APPHUB_EVENT_QUEUE_NAME": "events-b",
            "EVENT_INGRESS_CONCURRENCY": "9",
            "APPHUB_EVENT_RETENTION_DAYS": "2",
            "ASSET_MATERIALIZER_BASE_BACKOFF_MS": "50",
            "ASSET_MATERIALIZER_MAX_BACKOFF_MS": "400",
            "ASSET_MATERIALIZER_REFRESH_INTERVAL_MS": "0",
        }
    )
    assert (settings.heartbeat_timeout_ms, settings.run_concurrency) == (3000, 7)
    assert (settings.job_concurrency, settings.reconcile_interval_ms) == (3, 1000)
    assert [rule.source for rule in settings.event_rate_limits] == ["svc"]
    assert (settings.event_queue_name, settings.event_ingress_concurrency) == ("events-b", 9)
    assert settings.event_retention_days == 2
    assert settings.materializer_base_backoff_ms == 50
    assert settings.materializer_max_backoff_ms == 400
    assert settings.materializer_refresh_interval_ms == 0


def test_materializer_defaults_are_the_contract_s() -> None:
    settings = Settings.from_env({})
    assert settings.materializer_base_backoff_ms == 120_000
    assert settings.materializer_max_backoff_ms == 1_800_000
    assert settings.materializer_refresh_interval_ms == 600_000


def test_service_health_settings() -> None:
    defaults = Settings.from_env({})
    assert (defaults.service_health_interval_ms, defaults.service_health_timeout_ms) == (
        30_000,
        5_000,
    )
    tuned = Settings.from_env(
        {"SERVICE_HEALTH_INTERVAL_MS": "250", "SERVICE_HEALTH_TIMEOUT_MS": "100"}
    )
    assert (tuned.service_health_interval_ms, tuned.service_health_timeout_ms) == (250, 100)
    for variable in ("SERVICE_HEALTH_INTERVAL_MS", "SERVICE_HEALTH_TIMEOUT_MS"):
        with pytest.raises(SettingsError, match="^" + variable):
            Settings.from_env({variable: "10"})
