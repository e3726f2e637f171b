"""`apphub services …` against a running server and a real HTTP service."""

from __future__ import annotations

import time

from tests.acceptance.conftest import Server
from tests.http_peer import Reply, http_peer

SERVICE_YAML = """\
slug: billing
displayName: Billing
baseUrl: {url}
healthPath: /status
"""


def test_register_list_and_check(server: Server) -> None:
    with http_peer() as peer:
        peer.reply("/status", Reply(200, {"status": "ok"}))
        (server.workdir / "service.yaml").write_text(SERVICE_YAML.format(url=peer.url))
        registered = server.cli("services", "register", "service.yaml")
        assert registered.returncode == 0, registered.stderr
        assert f"billing registered at {peer.url}" in registered.stdout

        deadline = time.monotonic() + 10
        listed = server.cli("services", "list")
        while "healthy" not in listed.stdout and time.monotonic() < deadline:
            time.sleep(0.2)
            listed = server.cli("services", "list")
        assert listed.returncode == 0
        assert "billing" in listed.stdout
        assert "healthy" in listed.stdout

        peer.reply("/status", Reply(503, "maintenance"))
        checked = server.cli("services", "check", "billing")
        assert checked.returncode == 0, checked.stderr
        assert "billing: unhealthy" in checked.stdout
        assert "503" in checked.stdout

        again = server.cli("services", "register", "service.yaml")
        assert again.returncode == 1
        assert "already exists" in again.stderr


def test_refusals_exit_non_zero_with_the_message(server: Server) -> None:
    (server.workdir / "bad.yaml").write_text("slug: files\nbaseUrl: ftp://files.example\n")
    refused = server.cli("services", "register", "bad.yaml")
    assert refused.returncode == 1
    assert "baseUrl" in refused.stderr
    assert "http" in refused.stderr
    unknown = server.cli("services", "check", "ghost")
    assert unknown.returncode == 1
    assert "service not found" in unknown.stderr
    assert "ghost" not in server.cli("services", "list").stdout
