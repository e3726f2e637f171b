"""Partition keys: which keys an asset's partitioning allows, and which windows are recent."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apphub.domain.assets import (
    AssetDeclaration,
    DynamicPartitioning,
    Partitioning,
    StaticPartitioning,
    TimeWindowPartitioning,
)
from apphub.domain.errors import DefinitionError

DEFAULT_FORMATS = {
    "minute": "%Y-%m-%dT%H:%M",
    "hour": "%Y-%m-%dT%H",
    "day": "%Y-%m-%d",
    "week": "%G-W%V",
    "month": "%Y-%m",
}
DEFAULT_LOOKBACK = 10
DYNAMIC_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:=/@+-]{0,199}$")


def key_format(partitioning: TimeWindowPartitioning) -> str:
    return partitioning.format or DEFAULT_FORMATS[partitioning.granularity]


def describe(partitioning: Partitioning) -> str:
    """The allowed form of a key, in words, for error messages."""
    if isinstance(partitioning, StaticPartitioning):
        shown = ", ".join(partitioning.keys[:20])
        more = f" (and {len(partitioning.keys) - 20} more)" if len(partitioning.keys) > 20 else ""
        return f"one of: {shown}{more}"
    if isinstance(partitioning, TimeWindowPartitioning):
        example = window_start(datetime.now(ZoneInfo(partitioning.timezone)), partitioning)
        return (
            f"a {partitioning.granularity} window in format {key_format(partitioning)!r} "
            f"({partitioning.timezone}), e.g. {format_key(example, partitioning)!r}"
        )
    return "a key of letters, digits and ._:=/@+- (up to 200 characters)"


def key_problem(partitioning: Partitioning, key: str | None) -> str | None:
    """None when `key` is a valid partition key, else why not."""
    if key is None or key == "":
        return f"a partition key is required: {describe(partitioning)}"
    if isinstance(partitioning, StaticPartitioning):
        return (
            None
            if key in partitioning.keys
            else f"unknown partition {key!r}: " + describe(partitioning)
        )
    if isinstance(partitioning, DynamicPartitioning):
        return (
            None
            if DYNAMIC_KEY.match(key)
            else f"invalid partition {key!r}: " + describe(partitioning)
        )
    return _window_problem(partitioning, key)


def _window_problem(partitioning: TimeWindowPartitioning, key: str) -> str | None:
    """A window key parses with the format and names the START of a window."""
    fmt = key_format(partitioning)
    try:
        parsed = _parse(key, fmt)
    except ValueError:
        return f"invalid partition {key!r}: expected {describe(partitioning)}"
    start = window_start(parsed, partitioning)
    if format_key(start, partitioning) != key:
        return f"invalid partition {key!r}: not the start of a {partitioning.granularity} window"
    return None


def _parse(key: str, fmt: str) -> datetime:
    if "%G" in fmt or "%V" in fmt:  # ISO week keys need a weekday to parse
        return datetime.strptime(key + "-1", fmt + "-%u")
    return datetime.strptime(key, fmt)


def window_start(moment: datetime, partitioning: TimeWindowPartitioning) -> datetime:
    granularity = partitioning.granularity
    if granularity == "minute":
        return moment.replace(second=0, microsecond=0)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == "day":
        return day
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def format_key(moment: datetime, partitioning: TimeWindowPartitioning) -> str:
    return moment.strftime(key_format(partitioning))


def previous_window(start: datetime, partitioning: TimeWindowPartitioning) -> datetime:
    granularity = partitioning.granularity
    steps = {
        "minute": timedelta(minutes=1),
        "hour": timedelta(hours=1),
        "day": timedelta(days=1),
        "week": timedelta(weeks=1),
    }
    if granularity in steps:
        return start - steps[granularity]
    year, month = (start.year, start.month - 1) if start.month > 1 else (start.year - 1, 12)
    return start.replace(year=year, month=month)


def recent_windows(
    partitioning: TimeWindowPartitioning, now: datetime, count: int | None = None
) -> list[str]:
    """The keys of the last `count` windows, newest first, the current one included."""
    count = count or partitioning.lookback_windows or DEFAULT_LOOKBACK
    current = window_start(now.astimezone(ZoneInfo(partitioning.timezone)), partitioning)
    keys = []
    for _ in range(count):
        keys.append(format_key(current, partitioning))
        current = previous_window(current, partitioning)
    return keys


def occurrence_key(moment: datetime, partitioning: TimeWindowPartitioning) -> str:
    """The key of the window a moment falls in (schedules give runs their partition)."""
    local = moment.astimezone(ZoneInfo(partitioning.timezone))
    return format_key(window_start(local, partitioning), partitioning)


def produced_declarations(steps: list[Any]) -> list[AssetDeclaration]:
    """Every `produces` declaration of a workflow's steps (fan-out templates included)."""
    found: list[AssetDeclaration] = []
    for step in steps:
        found += step.produces
        template = getattr(step, "template", None)
        if template is not None:
            found += template.produces
    return found


def check_run_partition(steps: list[Any], partition_key: str | None) -> None:
    """A workflow that produces partitioned assets runs for one valid partition key."""
    seen: list[Partitioning] = []
    for declaration in produced_declarations(steps):
        partitioning = declaration.partitioning
        if partitioning is None or partitioning in seen:
            continue
        seen.append(partitioning)
        problem = key_problem(partitioning, partition_key)
        if problem is not None:
            raise DefinitionError(
                f"partitionKey: {problem} (asset {declaration.asset_id!r})",
                reason="invalid_partition",
                detail={
                    "field": "partitionKey",
                    "assetId": declaration.asset_id,
                    "allowed": describe(partitioning),
                },
            )
