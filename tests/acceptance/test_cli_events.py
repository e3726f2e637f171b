"""`apphub events …` against a real server: publish, query, tail, and the ingress process."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import threading
from typing import Any

import httpx

from tests.acceptance.conftest import Server, free_port

TAIL_SECONDS = 30


def _publish(server: Server, event_type: str, payload: dict[str, Any], **extra: str) -> str:
    """Publish over HTTP directly: quicker than a CLI process when the CLI is not under test."""
    body = {"type": event_type, "source": "tests", "payload": payload, **extra}
    response = httpx.post(
        f"{server.url}/events", json=body, headers={"Authorization": f"Bearer {server.token}"}
    )
    assert response.status_code == 202, response.text
    event_id: str = response.json()["data"]["event"]["id"]
    return event_id


def _start_tail(server: Server, *args: str) -> subprocess.Popen[str]:
    """`apphub events tail ARGS` in the background, as `server.cli` would run it."""
    return subprocess.Popen(
        [sys.executable, "-m", "apphub", "events", "tail", *args],
        cwd=server.workdir,
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_connected(tail: subprocess.Popen[str]) -> None:
    """The tail says so on stderr once the server acknowledged its subscription."""
    assert tail.stderr is not None
    ready, _, _ = select.select([tail.stderr], [], [], TAIL_SECONDS)
    assert ready, "the tail did not connect"
    line = tail.stderr.readline()
    assert line.startswith("tailing "), line


def _finish(tail: subprocess.Popen[str]) -> list[str]:
    try:
        out, err = tail.communicate(timeout=TAIL_SECONDS)
    except subprocess.TimeoutExpired:
        tail.kill()
        out, err = tail.communicate()
        raise AssertionError(f"the tail did not stop:\n{out}\n{err}") from None
    assert tail.returncode == 0, out + err
    return out.splitlines()


def test_publish_then_query(server: Server) -> None:
    published = server.cli(
        "events",
        "publish",
        "demo.created",
        "--source",
        "cli-test",
        "--payload",
        '{"n": 1, "tag": "[x]"}',
        "--correlation-id",
        "corr-1",
        "--id",
        "evt-cli-1",
    )
    assert published.returncode == 0, published.stderr
    assert "event evt-cli-1 accepted" in published.stdout

    table = server.cli("events", "query", "--type", "demo.created")
    assert table.returncode == 0, table.stderr
    assert "evt-cli-1" in table.stdout
    assert "cli-test" in table.stdout
    assert '"tag":"[x]"' in table.stdout

    as_json = server.cli("events", "query", "--correlation-id", "corr-1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert [event["id"] for event in data["events"]] == ["evt-cli-1"]
    assert data["events"][0]["payload"] == {"n": 1, "tag": "[x]"}
    assert data["page"]["hasMore"] is False

    nothing = server.cli("events", "query", "--type", "demo.never", "--json")
    assert json.loads(nothing.stdout)["events"] == []


def test_query_pages_with_a_cursor(server: Server) -> None:
    for n in range(3):
        _publish(server, "demo.paged", {"n": n})
    first = server.cli("events", "query", "--type", "demo.paged", "--limit", "2")
    assert first.returncode == 0, first.stderr
    assert "next page: --cursor " in first.stdout
    cursor = first.stdout.split("next page: --cursor ")[1].split()[0]
    rest = server.cli("events", "query", "--type", "demo.paged", "--cursor", cursor, "--json")
    assert rest.returncode == 0, rest.stderr
    assert [event["payload"] for event in json.loads(rest.stdout)["events"]] == [{"n": 0}]


def test_bad_input_is_reported(server: Server) -> None:
    bad_payload = server.cli("events", "publish", "demo.x", "--source", "s", "--payload", "{bad")
    assert bad_payload.returncode == 1
    assert "--payload" in bad_payload.stderr
    assert "Traceback" not in bad_payload.stderr

    loud = server.cli("events", "query", "--severity", "loud")
    assert loud.returncode == 1
    assert "severity" in loud.stderr
    assert "(HTTP 400)" in loud.stderr

    nowhere = {**server.env, "APPHUB_URL": f"http://127.0.0.1:{free_port()}"}
    unreachable = server.cli("events", "tail", env=nowhere)
    assert unreachable.returncode == 1
    assert "cannot reach apphub" in unreachable.stderr


def test_tail_prints_matching_events_live(server: Server) -> None:
    tail = _start_tail(server, "--type", "demo.ping", "--count", "2")
    try:
        _wait_connected(tail)
        _publish(server, "demo.ping", {"n": 1})
        _publish(server, "demo.other", {"n": 99})
        _publish(server, "demo.ping", {"n": 2})
        lines = _finish(tail)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.communicate()
    assert len(lines) == 2, lines
    assert all("  demo.ping  tests  info  " in line for line in lines)
    assert lines[0].endswith('{"n":1}')
    assert lines[1].endswith('{"n":2}')


def test_tail_after_replays_stored_events(server: Server) -> None:
    first = _publish(server, "demo.replay", {"n": 1})
    _publish(server, "demo.replay", {"n": 2})
    _publish(server, "demo.replay", {"n": 3})
    tail = _start_tail(server, "--after", first, "--count", "2")
    lines = _finish(tail)
    assert [line.rsplit("  ", 1)[1] for line in lines] == ['{"n":2}', '{"n":3}']

    unknown = server.cli("events", "tail", "--after", "no-such-event", "--count", "1")
    assert unknown.returncode == 1
    assert "no stored event has id" in unknown.stderr


def test_ingress_process_starts_and_stops_on_sigterm(server: Server) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "apphub", "events"],
        cwd=server.workdir,
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(30, process.kill)  # a process that never says it runs fails
    watchdog.start()
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()  # blocks until the process says it runs
        assert "apphub events running" in ready, ready + process.communicate()[0]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "Traceback" not in output
