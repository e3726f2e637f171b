"""Cron schedules: what a client declares, and which occurrences are due (pure, via croniter).

Occurrences are computed in the schedule's timezone (so `0 2 * * *` is 02:00 local, across
daylight-saving changes) and handled in UTC. A schedule owes every occurrence after its
watermark (`last_occurrence`), inside `[startWindow, endWindow]`, up to now: with catch-up
the oldest 25 per pass, without only the latest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter
from pydantic import Field, StringConstraints, field_validator, model_validator

from apphub.domain.assets import TimeWindowPartitioning, check_timezone
from apphub.domain.base import ApiModel, JsonObject, Name, UtcTime
from apphub.domain.partitions import occurrence_key, produced_declarations
from apphub.domain.runs import Record

CATCH_UP_BATCH = 25
TRIGGERED_BY = "schedule"
Cron = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def check_cron(expression: str) -> str:
    """Five fields (minute hour day month weekday), an optional sixth for seconds, or a
    macro (`@daily`); it must fire at least once."""
    fields = expression.split()
    if not (expression.startswith("@") or len(fields) in (5, 6)):
        raise ValueError(f"invalid cron {expression!r}: expected 5 fields (or 6 with seconds)")
    if not croniter.is_valid(expression):
        raise ValueError(f"invalid cron {expression!r}")
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron {expression!r} never fires") from None
    return expression


class ScheduleFields(ApiModel):
    name: Name | None = None
    cron: Cron | None = None
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    parameters: JsonObject | None = None
    start_window: UtcTime | None = None
    end_window: UtcTime | None = None
    catch_up: bool | None = None
    is_active: bool | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @field_validator("start_window", "end_window")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


class SchedulePatch(ScheduleFields):
    """`PATCH /workflow-schedules/{id}`: merged over the stored schedule."""


class ScheduleSpec(ScheduleFields):
    """`POST /workflows/{slug}/schedules`."""

    cron: Cron
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"
    parameters: JsonObject = Field(default_factory=dict)
    catch_up: bool = True
    is_active: bool = True

    @model_validator(mode="after")
    def _window(self) -> ScheduleSpec:
        if self.start_window and self.end_window and self.end_window <= self.start_window:
            raise ValueError("endWindow must be after startWindow")
        return self


class Schedule(Record):
    id: str
    workflow_definition_id: str
    workflow_slug: str
    name: str | None = None
    cron: str
    timezone: str
    parameters: JsonObject
    start_window: UtcTime | None = None
    end_window: UtcTime | None = None
    catch_up: bool
    is_active: bool
    next_run_at: UtcTime | None = None
    last_occurrence: UtcTime | None = None
    last_run_id: str | None = None
    last_error: str | None = None
    created_at: UtcTime
    updated_at: UtcTime


@dataclass(frozen=True, slots=True)
class Timing:
    """The settings occurrences are computed from."""

    cron: str
    timezone: str
    start_window: datetime | None = None
    end_window: datetime | None = None
    catch_up: bool = True


def _after(timing: Timing, moment: datetime) -> croniter:
    local = moment.astimezone(ZoneInfo(timing.timezone))
    return croniter(timing.cron, local)


def _repeated_wall_time(timing: Timing, occurrence: datetime) -> bool:
    """The second pass of a fixed-hour occurrence through the hour a DST fall-back repeats:
    `0 2 * * *` runs once that night, as cron does; an every-hour (`*` hour) cron runs in both
    passes, since an hour did pass."""
    local = occurrence.astimezone(ZoneInfo(timing.timezone))
    ambiguous = local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset()
    return ambiguous and local.fold == 1 and croniter(timing.cron).expanded[1] != ["*"]


def _step(iterator: croniter, timing: Timing, forward: bool) -> datetime:
    """The next (or previous) occurrence in UTC, passing over a repeated wall time."""
    while True:
        found: datetime = iterator.get_next(datetime) if forward else iterator.get_prev(datetime)
        if not _repeated_wall_time(timing, found):
            return found.astimezone(UTC)


def first_watermark(timing: Timing, now: datetime) -> datetime:
    """Occurrences after this are owed: from `startWindow` when it is past (those were
    missed), else from now."""
    if timing.start_window is not None and timing.start_window <= now:
        return timing.start_window - timedelta(microseconds=1)
    return now


def next_occurrence(timing: Timing, after: datetime) -> datetime | None:
    """The first occurrence after `after` inside the windows; None when there is none."""
    if timing.start_window is not None and after < timing.start_window:
        after = timing.start_window - timedelta(microseconds=1)
    try:
        found = _step(_after(timing, after), timing, forward=True)
    except CroniterBadDateError:
        return None
    if timing.end_window is not None and found > timing.end_window:
        return None
    return found


def due_occurrences(timing: Timing, watermark: datetime, now: datetime) -> list[datetime]:
    """Occurrences after the watermark and up to now: the oldest 25 with catch-up, else only
    the latest."""
    first = next_occurrence(timing, watermark)
    if first is None or first > now:
        return []
    if not timing.catch_up:
        limit = now if timing.end_window is None else min(now, timing.end_window)
        latest = _step(_after(timing, limit + timedelta(microseconds=1)), timing, forward=False)
        return [max(first, latest)]
    due = [first]
    while len(due) < CATCH_UP_BATCH:
        following = next_occurrence(timing, due[-1])
        if following is None or following > now:
            break
        due.append(following)
    return due


def occurrence_partition(steps: list[Any], occurrence: datetime) -> str | None:
    """The key of the time window an occurrence falls in, for a timeWindow-partitioned
    workflow (its first such declaration); None for an unpartitioned one."""
    for declaration in produced_declarations(steps):
        if isinstance(declaration.partitioning, TimeWindowPartitioning):
            return occurrence_key(occurrence, declaration.partitioning)
    return None


def schedulable(steps: list[Any]) -> str | None:
    """Why a workflow cannot be scheduled (static or dynamic partitions have no key a clock
    could pick), or None."""
    for declaration in produced_declarations(steps):
        partitioning = declaration.partitioning
        if partitioning is not None and not isinstance(partitioning, TimeWindowPartitioning):
            return (
                f"asset {declaration.asset_id!r} has {partitioning.type} partitions; a schedule "
                "can run only unpartitioned or timeWindow-partitioned workflows"
            )
    return None


def run_key(schedule_id: str, occurrence: datetime) -> str:
    """One run per occurrence: `schedule:<id>:<UTC time>`."""
    return f"schedule:{schedule_id}:{occurrence.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"
