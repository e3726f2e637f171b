"""Cron occurrences across daylight-saving changes: local wall times, as cron keeps them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apphub.domain.schedules import Timing, due_occurrences, next_occurrence

BERLIN_FALL_BACK_EVE = datetime(2024, 10, 26, 22, tzinfo=UTC)  # 00:00 CEST, Oct 27
AFTER_FALL_BACK = datetime(2024, 10, 27, 3, tzinfo=UTC)  # 04:00 CET


def utc_times(moments: list[datetime]) -> list[str]:
    return [moment.strftime("%H:%MZ") for moment in moments]


@pytest.mark.parametrize("catch_up", [True, False])
def test_a_fixed_hour_in_the_repeated_hour_runs_once(catch_up: bool) -> None:
    """02:00 happens twice in Berlin that night (00:00Z CEST, 01:00Z CET): one run."""
    timing = Timing("0 2 * * *", "Europe/Berlin", catch_up=catch_up)
    due = due_occurrences(timing, BERLIN_FALL_BACK_EVE, AFTER_FALL_BACK)
    assert utc_times(due) == ["00:00Z"]
    assert next_occurrence(timing, due[0]) == datetime(2024, 10, 28, 1, tzinfo=UTC)


def test_an_every_hour_cron_runs_in_both_passes_of_the_repeated_hour() -> None:
    timing = Timing("30 * * * *", "Europe/Berlin")
    due = due_occurrences(timing, BERLIN_FALL_BACK_EVE, AFTER_FALL_BACK)
    assert utc_times(due) == ["22:30Z", "23:30Z", "00:30Z", "01:30Z", "02:30Z"]


def test_a_time_spring_forward_skips_runs_once_right_after_the_jump() -> None:
    """02:30 does not exist in Berlin on 2024-03-31 (02:00 → 03:00): it runs at 03:00 CEST,
    as cron runs a job whose time was skipped, and once."""
    timing = Timing("30 2 * * *", "Europe/Berlin")
    found = next_occurrence(timing, datetime(2024, 3, 30, 23, tzinfo=UTC))
    assert found == datetime(2024, 3, 31, 1, tzinfo=UTC)
    assert next_occurrence(timing, found) == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)
