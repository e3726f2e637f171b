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
        APPHUB_PORT=str(port),
        APPHUB_DATABASE_URL=database_url,
        APPHUB_LOG_LEVEL="warning",
        COLUMNS="200",
    )
    env.pop("REDIS_URL", None)
    return env


@pytest.fixture
def server(database: Database, tmp_path: Path) -> Iterator[Server]:
    """`apphub serve` in a child process, on the test's backend, with its own data dir."""
    port = free_port()
    url = database.engine.url.render_as_string(hide_password=False)
    env = apphub_env(tmp_path, port, url)
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "apphub", "serve"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(process, base_url, log_path)
        yield Server(base_url, port, tmp_path, env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log_path.read_text()
            raise AssertionError(f"apphub serve exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"apphub serve did not answer within {STARTUP_SECONDS}s")
