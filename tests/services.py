"""Which real services answer on this machine, and the URLs the tests use for them."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

POSTGRES_ADMIN_URL = os.environ.get(
    "APPHUB_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("APPHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("APPHUB_REQUIRE_SERVICES", "") not in {"", "0", "false"}


def answers(url: str, default_port: int) -> bool:
    """True when something accepts a TCP connection at the URL's host and port."""
    parsed = urlparse(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection((parsed.hostname, parsed.port or default_port), 1.0):
            return True
    except OSError:
        return False


def missing_services() -> list[str]:
    missing = []
    if not answers(POSTGRES_ADMIN_URL, 5432):
        missing.append(f"PostgreSQL ({POSTGRES_ADMIN_URL})")
    if not answers(REDIS_URL, 6379):
        missing.append(f"Redis ({REDIS_URL})")
    return missing
