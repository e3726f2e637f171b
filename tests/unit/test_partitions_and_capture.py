"""Partition keys, asset capture, and outdated upstreams (pure rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apphub.domain.assets import AssetDeclaration, TimeWindowPartitioning
from apphub.domain.capture import capture_assets
from apphub.domain.lineage import Declared, Latest, asset_graph
from apphub.domain.partitions import key_problem, occurrence_key, recent_windows

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)


def window(granularity: str, **fields: Any) -> TimeWindowPartitioning:
    return TimeWindowPartitioning.model_validate(
        {"type": "timeWindow", "granularity": granularity, **fields}
    )


@pytest.mark.parametrize(
    ("granularity", "good", "bad"),
    [
        ("day", "2026-11-23", ["2026-11-23T00", "2026-02-30", "23-11-2026"]),
        ("hour", "2026-11-23T15", ["2026-11-23", "2026-11-23T25"]),
        ("month", "2026-11", ["2026-13", "2026-11-01"]),
        ("week", "2026-W48", ["2026-W54", "2026-48"]),
        ("minute", "2026-11-23T15:30", ["2026-11-23T15:30:10"]),
    ],
)
def test_window_keys(granularity: str, good: str, bad: list[str]) -> None:
    partitioning = window(granularity)
    assert key_problem(partitioning, good) is None
    for key in bad:
        assert key_problem(partitioning, key) is not None, key


def test_window_keys_follow_format_and_timezone() -> None:
    tokyo = window("day", timezone="Asia/Tokyo", format="%Y%m%d")
    assert key_problem(tokyo, "20261124") is None
    assert key_problem(tokyo, "2026-11-24") is not None
    late_utc = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)  # already the 24th in Tokyo
    assert occurrence_key(late_utc, tokyo) == "20261124"
    assert recent_windows(tokyo, late_utc, 2) == ["20261124", "20261123"]


@given(st.sampled_from(["minute", "hour", "day", "week", "month"]), st.integers(1, 60))
def test_recent_windows_are_valid_distinct_and_newest_first(granularity: str, count: int) -> None:
    partitioning = window(granularity)
    keys = recent_windows(partitioning, NOW, count)
    assert len(keys) == len(set(keys)) == count
    assert all(key_problem(partitioning, key) is None for key in keys)
    if granularity != "week":  # ISO week keys sort by year then week, like the others
        assert keys == sorted(keys, reverse=True)


def declaration(**fields: Any) -> AssetDeclaration:
    return AssetDeclaration.model_validate({"assetId": "Report.Daily", **fields})


def test_capture_keeps_declared_assets_case_insensitively() -> None:
    result = {
        "assets": [
            {"assetId": "report.daily", "payload": {"n": 1}},
            {"assetId": "other", "payload": 2},
        ]
    }
    capture = capture_assets([declaration()], result, None, NOW)
    assert capture.error is None
    assert [p.asset_id for p in capture.productions] == ["Report.Daily"]
    assert capture.productions[0].produced_at == NOW
    assert capture.undeclared == ["other"]


def test_capture_reads_produced_at_and_partition() -> None:
    static = {"type": "static", "keys": ["eu", "us"]}
    result = {
        "assets": [{"assetId": "Report.Daily", "payload": 1, "producedAt": "2026-11-01T10:00:00Z"}]
    }
    capture = capture_assets([declaration(partitioning=static)], result, "eu", NOW)
    assert capture.productions[0].partition_key == "eu"
    assert capture.productions[0].produced_at == datetime(2026, 11, 1, 10, tzinfo=UTC)
    wrong = capture_assets([declaration(partitioning=static)], result, "mars", NOW)
    assert wrong.error is not None
    assert "mars" in wrong.error


@pytest.mark.parametrize(
    ("result", "fragment"),
    [
        ({"assets": {"assetId": "x"}}, "must be a list"),
        ({"assets": [{"payload": 1}]}, "assetId"),
        ({"assets": [{"assetId": "Report.Daily", "producedAt": "noon"}]}, "producedAt"),
        ({"assets": [{"assetId": "Report.Daily", "payload": {"n": "one"}}]}, "schema"),
        (
            {
                "assets": [
                    {"assetId": "Report.Daily", "payload": {"n": 1}},
                    {"assetId": "report.daily", "payload": {"n": 2}},
                ]
            },
            "twice",
        ),
    ],
)
def test_capture_errors_fail_the_step(result: dict[str, Any], fragment: str) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    capture = capture_assets([declaration(schema=schema)], result, None, NOW)
    assert capture.error is not None
    assert fragment in capture.error
    assert capture.productions == []


def test_results_without_assets_capture_nothing() -> None:
    assert capture_assets([declaration()], {"rows": 3}, None, NOW).productions == []
    assert capture_assets([declaration()], [1, 2], None, NOW).error is None


def test_outdated_upstreams_compare_the_same_partition() -> None:
    declared = [
        Declared("up", "make", "produces", "raw", "raw"),
        Declared("down", "derive", "consumes", "raw", "raw"),
        Declared("down", "derive", "produces", "derived", "derived"),
    ]

    def latest(asset: str, workflow: str, partition: str, minutes: int) -> Latest:
        return Latest(workflow, asset, partition, NOW + timedelta(minutes=minutes), "r", "s")

    def outdated(*rows: Latest) -> list[str]:
        graph = asset_graph(declared, rows, [], NOW)
        node = next(a for a in graph["assets"] if a["assetId"] == "derived")
        assert graph["edges"] == [{"from": "raw", "to": "derived", "workflowSlug": "down"}]
        return list(node["outdatedUpstreamAssetIds"])

    assert outdated() == []
    assert outdated(latest("raw", "up", "eu", 0)) == ["raw"]
    assert outdated(latest("raw", "up", "eu", 0), latest("derived", "down", "eu", 1)) == []
    assert outdated(latest("raw", "up", "eu", 2), latest("derived", "down", "eu", 1)) == ["raw"]
    assert outdated(latest("raw", "up", "us", 0), latest("derived", "down", "eu", 1)) == ["raw"]
    assert outdated(latest("raw", "up", "us", 0), latest("derived", "down", "", 1)) == []
