"""Two `apphub scheduler` processes on PostgreSQL + Redis: one acts, the other stands by and
takes over when the first dies; every occurrence runs exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import croniter

from apphub.domain.base import iso_ms
from tests.acceptance.conftest import Cluster
from tests.acceptance.test_materializer_processes import wait_until
from tests.runs import FIXTURES

EVERY_SECOND = "* * * * * *"  # croniter's sixth field: seconds


def test_two_schedulers_run_each_occurrence_once(cluster: Cluster) -> None:
    cluster.start(["worker"], "worker")
    chatty = cluster.env | {"APPHUB_LOG_LEVEL": "info"}
    first = cluster.start(["scheduler"], "scheduler-1", chatty)
    second = cluster.start(["scheduler"], "scheduler-2", chatty)
    cluster.post("/jobs", {"slug": "emit", "name": "emit", "entryPoint": f"{FIXTURES}:emit"})
    cluster.post(
        "/workflows", {"slug": "tick", "name": "tick", "steps": [{"id": "t", "jobSlug": "emit"}]}
    )
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    end = start + timedelta(seconds=6)
    cluster.post(
        "/workflows/tick/schedules",
        {"cron": EVERY_SECOND, "startWindow": iso_ms(start), "endWindow": iso_ms(end)},
    )
    expected, moments = [], croniter(EVERY_SECOND, start - timedelta(microseconds=1))
    while (moment := moments.get_next(datetime)) <= end:
        expected.append(iso_ms(moment))
    assert len(expected) == 7
    # Halfway through, the acting scheduler dies; the standby takes over and catches up.
    wait_until("a first occurrence", lambda: len(cluster.runs()) >= 2, 20, cluster)
    leader = next(
        (p for p in (first, second) if "acting for the cluster" in p.log_path.read_text()), None
    )
    assert leader is not None, "no scheduler acted"
    leader.kill()
    runs = cluster.wait_all_ended(len(expected), timeout=40)
    occurrences = sorted(run["trigger"]["occurrence"] for run in runs)
    assert occurrences == expected  # each once: none lost in the take-over, none doubled
    standby = second if leader is first else first
    assert "acting for the cluster" in standby.log_path.read_text()
