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


def redis_database_url(url: str, worker_id: str, *, scaled: bool) -> str:
    """A Redis database of this test process's own: pytest-xdist workers (gw0, gw1, …) must not
    share queues. Each process gets two: one for in-process tests, one for process clusters."""
    index = int(worker_id[2:]) if worker_id.startswith("gw") else 0
    database = 2 * index + (1 if scaled else 0)
    if database > 15:
        raise RuntimeError(f"too many test processes for Redis's 16 databases ({worker_id})")
    return url.rsplit("/", 1)[0] + f"/{database}"
