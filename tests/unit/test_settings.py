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
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match="^" + re.escape(variable)):
        Settings.from_env(env)
