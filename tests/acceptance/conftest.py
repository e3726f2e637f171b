"""A real `apphub serve` process on a free port, and a way to run the `apphub` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from apphub.store.database import Database

STARTUP_SECONDS = 30
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
