"""What every benchmark shares: a fresh PostgreSQL database, and one way to read latencies.

One percentile for all scripts, so their p99s compare like with like.
"""

from __future__ import annotations

import math

from sqlalchemy import text

from apphub.store.database import open_database

POSTGRES_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


async def fresh_postgres(name: str = "apphub_bench") -> str:
    """Drop and create database `name`; its URL."""
    admin = open_database(POSTGRES_ADMIN)
    async with admin.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: a value that was measured, never an extrapolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def latency_line(label: str, latencies: list[float], unit: str = "rounds") -> str:
    """`  label, N rounds: p50 …, p99 …, max …` (milliseconds)."""
    return (
        f"  {label}, {len(latencies)} {unit}: p50 {percentile(latencies, 0.5):.1f} ms, "
        f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
    )
