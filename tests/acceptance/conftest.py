"""A real `apphub serve` process on a free port, and a way to run the `apphub` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text

from apphub.store.database import Database, open_database
from apphub.store.tables import metadata
from tests.services import redis_database_url

STARTUP_SECONDS = 30
ENDED = {"succeeded", "failed", "canceled"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    port: int
    workdir: Path
    env: dict[str, str]

    @property
    def token(self) -> str:
        return (self.workdir / ".apphub" / "operator-token").read_text().strip()

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `apphub ARGS` as a user would, from the server's working directory."""
        return subprocess.run(
            [sys.executable, "-m", "apphub", *args],
            cwd=self.workdir,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )


def apphub_env(workdir: Path, port: int, database_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("APPHUB_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),  # job entry points such as tests.fixtures.workflow_jobs:emit
        APPHUB_PORT=str(port),
        APPHUB_DATABASE_URL=database_url,
        APPHUB_LOG_LEVEL="warning",
        COLUMNS="200",
    )
    env.pop("REDIS_URL", None)
    return env


def start_apphub(args: list[str], env: dict[str, str], workdir: Path, name: str) -> Process:
    """Start `apphub ARGS` in the background, its output in `<workdir>/<name>.log`."""
    log_path = workdir / f"{name}.log"
    with log_path.open("a") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "apphub", *args],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Process(popen, log_path)


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait()

    def wait_healthy(self, base_url: str) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"apphub exited with {self.popen.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"apphub did not answer within {STARTUP_SECONDS}s")


@pytest.fixture
def server(database: Database, tmp_path: Path) -> Iterator[Server]:
    """`apphub serve` in a child process, on the test's backend, with its own data dir."""
    yield from _serve(database, tmp_path, [])


@pytest.fixture
def server_with_examples(database: Database, tmp_path: Path) -> Iterator[Server]:
    """The server as `make run` starts it: with the example definitions registered."""
    yield from _serve(database, tmp_path, ["--defs", "examples.directory_insights"])


def _serve(database: Database, tmp_path: Path, extra: list[str]) -> Iterator[Server]:
    port = free_port()
    url = database.engine.url.render_as_string(hide_password=False)
    env = apphub_env(tmp_path, port, url)
    process = start_apphub(["serve", *extra], env, tmp_path, "server")
    base_url = f"http://127.0.0.1:{port}"
    try:
        process.wait_healthy(base_url)
        yield Server(base_url, port, tmp_path, env)
    finally:
        process.stop()


# --- scaled mode: several processes on PostgreSQL + Redis ------------------------------------


class Cluster:
    """An API process and any number of worker processes, sharing one database and Redis."""

    def __init__(self, workdir: Path, env: dict[str, str], port: int) -> None:
        self.workdir, self.env, self.port = workdir, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.processes: list[Process] = []

    def start(self, args: list[str], name: str, env: dict[str, str] | None = None) -> Process:
        process = start_apphub(args, env or self.env, self.workdir, name)
        self.processes.append(process)
        return process

    @property
    def headers(self) -> dict[str, str]:
        token = (self.workdir / ".apphub" / "operator-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(self.url + path, json=body, headers=self.headers, timeout=30)
        assert response.status_code in (201, 202), response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = httpx.get(
            f"{self.url}/workflow-runs?limit=200", timeout=30
        ).json()["data"]
        return runs

    def wait_all_ended(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = self.runs()
            if len(runs) >= count and all(run["status"] in ENDED for run in runs):
                return runs
            time.sleep(0.2)
        statuses = Counter(run["status"] for run in runs)
        logs = "\n".join(p.log_path.read_text()[-3000:] for p in self.processes)
        raise AssertionError(f"runs did not end in {timeout}s: {statuses}\n{logs}")

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
async def postgres_database(postgres_url: str) -> str:
    """The session's PostgreSQL database, emptied: the scaled mode's only database."""
    database = open_database(postgres_url)
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    async with database.write() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await database.dispose()
    return postgres_url


@pytest.fixture
def cluster(
    postgres_database: str, redis_url: str, worker_id: str, tmp_path: Path
) -> Iterator[Cluster]:
    scaled_redis = redis_database_url(redis_url, worker_id, scaled=True)
    redis.Redis.from_url(scaled_redis).flushdb()
    port = free_port()
    env = apphub_env(tmp_path, port, postgres_database)
    env |= {
        "REDIS_URL": scaled_redis,
        "APPHUB_HEARTBEAT_TIMEOUT_MS": "3000",
        "APPHUB_RECONCILE_INTERVAL_MS": "1000",
        "APPHUB_RUN_CONCURRENCY": "10",
    }
    cluster = Cluster(tmp_path, env, port)
    cluster.start(["serve", "--no-workers"], "api").wait_healthy(cluster.url)
    try:
        yield cluster
    finally:
        cluster.stop()
        client = redis.Redis.from_url(scaled_redis)
        client.flushdb()
        client.close()
