"""The asset materializer's pure rules, by example and as a stateful model of the service.

The examples pin each rule and reason of `apphub.domain.materialize`. The state machine at the
end plays the materializer service against plain dicts: random productions, run completions and
clock ticks on a small random asset graph, checking that every event gets exactly one decision
per consumer, that no (workflow, partition) ever has two auto runs in flight, and that once
everything settles every auto-materialized consumer is at least as new as its upstreams.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from apphub.domain.asset_graph import AssetGraph, Declaration, build_graph
from apphub.domain.materialize import (
    EXPLANATIONS,
    FOLLOW_UP,
    MAX_FAILURES,
    Backoff,
    Decision,
    Pending,
    Produced,
    WorkflowState,
    decide_after_cooldown,
    decide_produced,
    decide_refresh,
    decide_upstream_update,
    expiry_due,
    launch_parameters,
    merge_pending,
    on_run_completed,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Block = dict[str, Any]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def produces(
    workflow: str,
    asset: str,
    block: Block | None = None,
    *,
    freshness: dict[str, Any] | None = None,
    slug: str | None = None,
) -> Declaration:
    return Declaration(workflow, slug or workflow, "build", "produces", asset, freshness, block)


def consumes(workflow: str, asset: str, *, slug: str | None = None) -> Declaration:
    return Declaration(workflow, slug or workflow, "build", "consumes", asset)


def consumer_graph(block: Block | None, *extra: Declaration) -> AssetGraph:
    """`up` produces `raw`; `down` consumes it and produces `clean` under `block`."""
    return build_graph(
        [
            produces("up", "raw", {"onUpstreamUpdate": True}),
            consumes("down", "raw"),
            produces("down", "clean", block),
            *extra,
        ]
    )


def decide_one(
    graph: AssetGraph,
    state: WorkflowState | None = None,
    *,
    produced_at: datetime = T0,
    now: datetime = T0,
    producer: str | None = "up",
) -> Decision:
    """The single decision for `down` about an `asset.produced(raw)`."""
    states = {"down": state} if state is not None else {}
    decisions = decide_upstream_update(graph, "raw", producer, produced_at, states, now)
    assert len(decisions) == 1
    assert decisions[0].workflow_id == "down"
    return decisions[0]


ON_UPDATE: Block = {"onUpstreamUpdate": True}


# --- decide_upstream_update ---------------------------------------------------------------------


def test_upstream_update_launches_a_stale_consumer() -> None:
    decision = decide_one(consumer_graph(ON_UPDATE))
    assert (decision.outcome, decision.reason) == ("launched", "upstream-update")
    assert decision.launches
    assert decision.workflow_slug == "down"


def test_never_produced_or_older_consumer_is_stale() -> None:
    graph = consumer_graph(ON_UPDATE)
    assert decide_one(graph, WorkflowState()).launches
    older = WorkflowState(latest_production=at(-1))
    assert decide_one(graph, older, produced_at=at(0)).reason == "upstream-update"


def test_self_produced() -> None:
    graph = build_graph(
        [
            consumes("loop", "raw"),
            produces("loop", "raw", ON_UPDATE),
            produces("other", "raw", ON_UPDATE),
        ]
    )
    [own] = decide_upstream_update(graph, "raw", "loop", T0, {}, T0)
    assert (own.workflow_id, own.outcome, own.reason) == ("loop", "skipped", "self-produced")
    [foreign] = decide_upstream_update(graph, "raw", "other", T0, {}, T0)
    assert (foreign.workflow_id, foreign.outcome) == ("loop", "launched")


def test_self_produced_comes_before_every_other_gate() -> None:
    graph = build_graph([consumes("loop", "raw"), produces("loop", "raw", {"enabled": False})])
    busy = WorkflowState(in_flight_run="r1", cooldown_until=at(60))
    [decision] = decide_upstream_update(graph, "raw", "loop", T0, {"loop": busy}, T0)
    assert decision.reason == "self-produced"


@pytest.mark.parametrize(
    "graph",
    [
        pytest.param(consumer_graph(None), id="no-block"),
        pytest.param(consumer_graph({}), id="empty-block"),
        pytest.param(consumer_graph({"priority": 1}), id="block-without-onUpstreamUpdate"),
        pytest.param(consumer_graph({"onUpstreamUpdate": False}), id="onUpstreamUpdate-false"),
        pytest.param(
            build_graph(
                [
                    produces("up", "raw"),
                    Declaration("down", "down", "s", "consumes", "raw", None, ON_UPDATE),
                    produces("down", "clean"),
                ]
            ),
            id="block-on-a-consumed-asset-only",
        ),
    ],
)
def test_no_policy(graph: AssetGraph) -> None:
    decision = decide_one(graph, WorkflowState(latest_production=None))
    assert (decision.outcome, decision.reason) == ("skipped", "no-policy")


def test_consumer_producing_nothing_has_no_policy() -> None:
    graph = build_graph([produces("up", "raw", ON_UPDATE), consumes("down", "raw")])
    assert decide_one(graph).reason == "no-policy"


@pytest.mark.parametrize(
    "block",
    [
        {"enabled": False, "onUpstreamUpdate": True},
        {"enabled": False},
        {"enabled": False, "onUpstreamUpdate": False},
    ],
)
def test_disabled(block: Block) -> None:
    decision = decide_one(consumer_graph(block))
    assert (decision.outcome, decision.reason) == ("skipped", "disabled")


def test_one_disabled_block_disables_the_workflow() -> None:
    graph = consumer_graph(ON_UPDATE, produces("down", "extra", {"enabled": False}))
    assert decide_one(graph).reason == "disabled"


def test_disabled_comes_before_staleness_and_gates() -> None:
    busy = WorkflowState(latest_production=at(5), in_flight_run="r1", cooldown_until=at(60))
    assert decide_one(consumer_graph({"enabled": False}), busy).reason == "disabled"


@pytest.mark.parametrize("latest", [0, 1, 3600])
def test_not_stale(latest: float) -> None:
    """The consumer's latest production at or after the event's producedAt: nothing to do."""
    state = WorkflowState(latest_production=at(latest), in_flight_run="r1", cooldown_until=at(60))
    decision = decide_one(consumer_graph(ON_UPDATE), state, produced_at=at(0), now=at(0))
    assert (decision.outcome, decision.reason) == ("skipped", "not-stale")


def test_in_flight_is_coalesced_even_while_cooling_down() -> None:
    graph = consumer_graph(ON_UPDATE)
    running = WorkflowState(latest_production=at(-10), in_flight_run="r1")
    decision = decide_one(graph, running)
    assert (decision.outcome, decision.reason) == ("coalesced", "in-flight")
    assert not decision.launches
    cooling = WorkflowState(in_flight_run="r1", cooldown_until=at(60))
    assert decide_one(graph, cooling).outcome == "coalesced"


def test_cooldown_defers_until_it_ends() -> None:
    graph = consumer_graph(ON_UPDATE)
    state = WorkflowState(latest_production=at(-10), cooldown_until=at(60))
    for now in (at(0), at(59), at(60) - timedelta(microseconds=1)):
        decision = decide_one(graph, state, now=now)
        assert (decision.outcome, decision.reason) == ("deferred", "cooldown")
    for now in (at(60), at(61)):
        decision = decide_one(graph, state, now=now)
        assert (decision.outcome, decision.reason) == ("launched", "upstream-update")


def test_one_decision_per_consumer_sorted_by_priority_then_slug() -> None:
    consumers: list[tuple[str, str, Block | None]] = [
        ("w1", "zulu", {"onUpstreamUpdate": True, "priority": 5}),
        ("w2", "mike", {"onUpstreamUpdate": True, "priority": 1}),
        ("w3", "bravo", {"onUpstreamUpdate": True, "priority": 1}),
        ("w4", "yankee", {"onUpstreamUpdate": True}),
        ("w5", "alpha", None),
        ("w6", "echo", {"enabled": False, "priority": -3}),
    ]
    declarations = [produces("up", "raw", ON_UPDATE), produces("bystander", "other", ON_UPDATE)]
    for workflow, slug, block in consumers:
        declarations.append(consumes(workflow, "raw", slug=slug))
        declarations.append(produces(workflow, f"out-{workflow}", block, slug=slug))
    graph = build_graph(declarations)
    decisions = decide_upstream_update(graph, "raw", "up", T0, {}, T0)
    assert [(d.priority, d.workflow_slug) for d in decisions] == [
        (-3, "echo"),
        (0, "alpha"),
        (0, "yankee"),
        (1, "bravo"),
        (1, "mike"),
        (5, "zulu"),
    ]
    assert [d.reason for d in decisions] == [
        "disabled",
        "no-policy",
        "upstream-update",
        "upstream-update",
        "upstream-update",
        "upstream-update",
    ]
    assert decide_upstream_update(graph, "nobody-consumes-this", "up", T0, {}, T0) == []


def test_states_are_per_consumer() -> None:
    graph = build_graph(
        [
            produces("up", "raw"),
            *(d for w in ("a", "b", "c") for d in (consumes(w, "raw"), produces(w, w, ON_UPDATE))),
        ]
    )
    states = {
        "a": WorkflowState(latest_production=at(1)),
        "b": WorkflowState(in_flight_run="r"),
        "c": WorkflowState(cooldown_until=at(9)),
    }
    decisions = decide_upstream_update(graph, "raw", "up", at(0), states, at(0))
    assert {d.workflow_id: d.reason for d in decisions} == {
        "a": "not-stale",
        "b": "in-flight",
        "c": "cooldown",
    }


# --- decide_produced (a batch of events) -------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.sampled_from(["", "eu", "us"]), st.integers(0, 5)), min_size=1, max_size=60
    )
)
def test_a_batch_launches_at_most_once_per_workflow_and_partition(
    events: list[tuple[str, int]],
) -> None:
    graph = consumer_graph(ON_UPDATE)
    batch = [Produced("raw", "up", at(seconds), partition) for partition, seconds in events]
    decided = decide_produced(graph, batch, {}, at(10))
    assert [len(decisions) for decisions in decided] == [1] * len(batch)
    launches = Counter(
        event.partition
        for event, decisions in zip(batch, decided, strict=True)
        for d in decisions
        if d.launches
    )
    assert launches == Counter({partition: 1 for partition, _ in events})
    for event, [first] in zip(batch, decided, strict=True):
        firsts = [b for b in batch if b.partition == event.partition]
        expected = "launched" if event is firsts[0] else "coalesced"
        assert first.outcome == expected


def test_a_batch_starts_from_the_states_it_is_given() -> None:
    graph = consumer_graph(ON_UPDATE)
    states = {
        ("down", "eu"): WorkflowState(in_flight_run="r1"),
        ("down", "us"): WorkflowState(latest_production=at(9)),
    }
    batch = [Produced("raw", "up", at(5), "eu"), Produced("raw", "up", at(5), "us")]
    decided = decide_produced(graph, batch, states, at(10))
    assert [(d.outcome, d.reason) for [d] in decided] == [
        ("coalesced", "in-flight"),
        ("skipped", "not-stale"),
    ]


def test_every_reason_is_explained() -> None:
    reasons = {
        "upstream-update",
        FOLLOW_UP,
        "expiry",
        "manual-stale",
        "in-flight",
        "cooldown",
        "not-stale",
        "no-policy",
        "disabled",
        "self-produced",
        "newer-production-exists",
        "run-canceled",
        "invalid-parameters",
        "invalid-partition",
    }
    assert set(EXPLANATIONS) == reasons
    assert all(text and text[0].islower() for text in EXPLANATIONS.values())


# --- decide_refresh -----------------------------------------------------------------------------


def refresh_graph(block: Block | None) -> AssetGraph:
    return build_graph(
        [produces("maker", "table", block, freshness={"ttlMs": 1000}), consumes("maker", "other")]
    )


@pytest.mark.parametrize("reason", ["expiry", "manual-stale"])
def test_refresh_launches_the_producer(reason: Any) -> None:
    graph = refresh_graph({"onUpstreamUpdate": False})
    decision = decide_refresh(graph, "table", "maker", reason, False, WorkflowState(), T0)
    assert decision is not None
    assert (decision.workflow_id, decision.outcome, decision.reason) == (
        "maker",
        "launched",
        reason,
    )


def test_refresh_skips_a_superseded_production() -> None:
    decision = decide_refresh(
        refresh_graph({}), "table", "maker", "expiry", True, WorkflowState(), T0
    )
    assert decision is not None
    assert (decision.outcome, decision.reason) == ("skipped", "newer-production-exists")


def test_a_stale_mark_on_an_asset_without_its_own_block_is_no_policy() -> None:
    """Another asset's block opts only that asset in, though the run would produce both."""
    graph = build_graph([produces("maker", "table", {}), produces("maker", "plain")])
    decision = decide_refresh(graph, "plain", "maker", "manual-stale", False, WorkflowState(), T0)
    assert decision is not None
    assert (decision.outcome, decision.reason) == ("skipped", "no-policy")


def test_refresh_of_an_asset_the_workflow_does_not_produce_is_none() -> None:
    graph = refresh_graph({})
    state = WorkflowState()
    assert decide_refresh(graph, "other", "maker", "expiry", False, state, T0) is None
    assert decide_refresh(graph, "missing", "maker", "manual-stale", False, state, T0) is None
    assert decide_refresh(graph, "table", "unknown", "expiry", False, state, T0) is None


@pytest.mark.parametrize(
    ("block", "superseded", "state", "expected"),
    [
        (None, False, WorkflowState(), ("skipped", "no-policy")),
        ({"enabled": False}, False, WorkflowState(), ("skipped", "disabled")),
        ({"enabled": False}, True, WorkflowState(), ("skipped", "disabled")),
        ({}, True, WorkflowState(in_flight_run="r"), ("skipped", "newer-production-exists")),
        ({}, False, WorkflowState(in_flight_run="r"), ("coalesced", "in-flight")),
        ({}, False, WorkflowState(cooldown_until=at(1)), ("deferred", "cooldown")),
        ({}, False, WorkflowState(cooldown_until=at(0)), ("launched", "expiry")),
    ],
)
def test_refresh_gates(
    block: Block | None, superseded: bool, state: WorkflowState, expected: tuple[str, str]
) -> None:
    decision = decide_refresh(
        refresh_graph(block), "table", "maker", "expiry", superseded, state, T0
    )
    assert decision is not None
    assert (decision.outcome, decision.reason) == expected


# --- on_run_completed ---------------------------------------------------------------------------

BACKOFF = Backoff(base_ms=1_000, max_ms=10_000)


def test_backoff_defaults_match_the_contract() -> None:
    assert (Backoff().base_ms, Backoff().max_ms) == (120_000, 1_800_000)


def test_failures_grow_and_cap() -> None:
    failures = 0
    seen = []
    for _ in range(MAX_FAILURES + 5):
        completion = on_run_completed("failed", failures, None, T0, T0, BACKOFF)
        failures = completion.failures
        seen.append(failures)
    assert seen == [*range(1, 33), 32, 32, 32, 32, 32]
    assert MAX_FAILURES == 32


@pytest.mark.parametrize(
    ("previous", "cooldown_ms"),
    [(0, 1_000), (1, 2_000), (2, 4_000), (3, 8_000), (4, 10_000), (10, 10_000), (31, 10_000)],
)
def test_cooldown_doubles_up_to_the_max(previous: int, cooldown_ms: int) -> None:
    completion = on_run_completed("failed", previous, None, T0, at(5), BACKOFF)
    assert completion.failures == previous + 1
    assert completion.cooldown_until == at(5) + timedelta(milliseconds=cooldown_ms)
    assert not completion.follow_up
    assert not completion.follow_up_deferred


def test_default_backoff_is_capped_at_thirty_minutes_even_at_max_failures() -> None:
    completion = on_run_completed("failed", 100, None, T0, T0, Backoff())
    assert completion.failures == MAX_FAILURES
    assert completion.cooldown_until == T0 + timedelta(minutes=30)
    assert Backoff().delay(1) == timedelta(minutes=2)
    assert Backoff().delay(4) == timedelta(minutes=16)
    assert Backoff().delay(5) == timedelta(minutes=30)


@given(st.integers(0, 200), st.integers(1, 10**6), st.integers(1, 10**8))
def test_cooldown_formula(previous: int, base_ms: int, max_ms: int) -> None:
    backoff = Backoff(base_ms=base_ms, max_ms=max_ms)
    completion = on_run_completed("failed", previous, None, None, T0, backoff)
    failures = min(previous + 1, MAX_FAILURES)
    assert completion.failures == failures
    expected = timedelta(milliseconds=min(max_ms, base_ms * 2 ** (failures - 1)))
    assert completion.cooldown_until == T0 + expected


def test_success_resets() -> None:
    completion = on_run_completed("succeeded", 7, None, at(0), at(10), BACKOFF)
    assert (completion.failures, completion.cooldown_until) == (0, None)
    assert not completion.follow_up
    assert not completion.follow_up_deferred


@pytest.mark.parametrize(
    ("coalesced", "started", "owed"),
    [
        (None, at(0), False),
        (None, None, False),
        (at(1), at(0), True),
        (at(0), at(0), False),
        (at(-1), at(0), False),
        (at(0), None, True),
    ],
)
def test_follow_up_only_for_an_upstream_newer_than_the_run(
    coalesced: datetime | None, started: datetime | None, owed: bool
) -> None:
    success = on_run_completed("succeeded", 2, coalesced, started, at(10), BACKOFF)
    assert (success.follow_up, success.follow_up_deferred) == (owed, False)
    failure = on_run_completed("failed", 2, coalesced, started, at(10), BACKOFF)
    assert (failure.follow_up, failure.follow_up_deferred) == (False, owed)
    assert failure.cooldown_until == at(10) + timedelta(seconds=4)


def test_a_canceled_run_neither_fails_nor_resets_and_drops_its_follow_up() -> None:
    completion = on_run_completed("canceled", 3, at(5), at(0), at(10), BACKOFF)
    assert (completion.failures, completion.cooldown_until) == (3, None)
    assert (completion.follow_up, completion.follow_up_deferred) == (False, False)
    assert completion.follow_up_dropped
    quiet = on_run_completed("canceled", 0, None, at(0), at(10), BACKOFF)
    assert not quiet.follow_up_dropped


# --- owed work at the end of a cooldown ---------------------------------------------------------


def test_merge_pending_keeps_forced_work_and_otherwise_the_newest() -> None:
    upstream_old = Pending("upstream-update", at(1))
    upstream_new = Pending("upstream-update", at(5))
    follow_up = Pending(FOLLOW_UP, at(2))
    stale = Pending("manual-stale")
    assert merge_pending(None, upstream_old) is upstream_old
    assert merge_pending(upstream_old, upstream_new) is upstream_new
    assert merge_pending(upstream_new, upstream_old) is upstream_new
    assert merge_pending(follow_up, upstream_new) is follow_up
    assert merge_pending(upstream_new, follow_up) is follow_up
    assert merge_pending(upstream_new, stale) is stale
    assert merge_pending(stale, Pending(FOLLOW_UP, at(9))).reason == FOLLOW_UP
    assert merge_pending(Pending("expiry"), upstream_old) is upstream_old


def owed(block: Block | None = ON_UPDATE) -> Any:
    return consumer_graph(block).policies["down"]


@pytest.mark.parametrize(
    ("work", "latest", "expected"),
    [
        (Pending("upstream-update", at(5)), None, ("launched", "upstream-update")),
        (Pending("upstream-update", at(5)), at(4), ("launched", "upstream-update")),
        (Pending("upstream-update", at(5)), at(5), ("skipped", "not-stale")),
        (Pending("expiry", at(5)), at(6), ("skipped", "newer-production-exists")),
        (Pending("expiry", at(5)), at(1), ("launched", "expiry")),
        # the production that expired is still the latest: its rerun is what is owed
        (Pending("expiry", at(5)), at(5), ("launched", "expiry")),
        (Pending(FOLLOW_UP, at(5)), at(9), ("launched", FOLLOW_UP)),
        (Pending("manual-stale"), at(9), ("launched", "manual-stale")),
    ],
)
def test_after_cooldown(work: Pending, latest: datetime | None, expected: tuple[str, str]) -> None:
    state = WorkflowState(latest_production=latest, cooldown_until=at(10))
    decision = decide_after_cooldown(owed(), work, state, at(10))
    assert decision is not None
    assert (decision.outcome, decision.reason) == expected


def test_after_cooldown_still_gated() -> None:
    work = Pending("upstream-update", at(5))
    running = WorkflowState(in_flight_run="r")
    cooling = WorkflowState(cooldown_until=at(20))
    assert decide_after_cooldown(None, work, WorkflowState(), at(10)) is None
    for block, state, expected in [
        ({"enabled": False}, WorkflowState(), ("skipped", "disabled")),
        (None, WorkflowState(), ("skipped", "no-policy")),
        (ON_UPDATE, running, ("coalesced", "in-flight")),
        (ON_UPDATE, cooling, ("deferred", "cooldown")),
    ]:
        decision = decide_after_cooldown(owed(block), work, state, at(10))
        assert decision is not None
        assert (decision.outcome, decision.reason) == expected


# --- launch_parameters / expiry_due -------------------------------------------------------------


def test_launch_parameters_layering() -> None:
    graph = build_graph(
        [
            produces("w", "a", {"parameterDefaults": {"p": "block", "q": "block", "x": 1}}),
            consumes("w", "b"),
        ]
    )
    policy = graph.policies["w"]
    merged = launch_parameters(
        {"p": "default", "q": "default", "r": "default", "partitionKey": "default"},
        policy,
        {"q": "partition", "partitionKey": "from-partition-parameters"},
        "2026-01-01",
    )
    assert merged == {
        "p": "block",
        "q": "partition",
        "r": "default",
        "x": 1,
        "partitionKey": "2026-01-01",
    }
    assert launch_parameters(None, policy, None, None) == {"p": "block", "q": "block", "x": 1}
    assert launch_parameters({"d": 1}, graph.policies["w"], {}, None) == {
        "d": 1,
        "p": "block",
        "q": "block",
        "x": 1,
    }


def test_launch_parameters_do_not_mutate_their_inputs() -> None:
    defaults = {"a": 1}
    partition = {"b": 2}
    policy = build_graph([produces("w", "a", {"parameterDefaults": {"c": 3}})]).policies["w"]
    launch_parameters(defaults, policy, partition, "k")
    assert (defaults, partition, dict(policy.parameter_defaults)) == ({"a": 1}, {"b": 2}, {"c": 3})


def test_expiry_due() -> None:
    produced = at(100)
    assert expiry_due({"ttlMs": 5_000}, produced) == [("ttl", at(105))]
    assert expiry_due({"cadenceMs": 60_000}, produced) == [("cadence", at(160))]
    assert expiry_due({"ttlMs": 1_500, "cadenceMs": 3_600_000}, produced) == [
        ("ttl", at(101.5)),
        ("cadence", at(3700)),
    ]
    assert expiry_due({}, produced) == []
    assert expiry_due({"ttlMs": 0, "cadenceMs": None, "maxAgeMs": 10}, produced) == []


# --- build_graph --------------------------------------------------------------------------------


def test_build_graph_merges_a_workflows_blocks() -> None:
    graph = build_graph(
        [
            produces("w", "a", {"priority": 4, "parameterDefaults": {"x": 1, "y": 1}}),
            produces("w", "b", {"priority": 2, "onUpstreamUpdate": True, "parameterDefaults": {}}),
            produces("w", "c", {"parameterDefaults": {"y": 2, "z": 3}}),
            produces("w", "d"),
            consumes("w", "up1"),
            consumes("w", "up2"),
        ]
    )
    policy = graph.policies["w"]
    assert policy.has_block
    assert policy.enabled
    assert policy.on_upstream_update
    assert policy.priority == 2
    assert dict(policy.parameter_defaults) == {"x": 1, "y": 2, "z": 3}
    assert policy.produces == {"a", "b", "c", "d"}
    assert policy.consumes == {"up1", "up2"}
    assert graph.consumers == {"up1": ["w"], "up2": ["w"]}
    assert graph.producers == {key: ["w"] for key in "abcd"}
    assert [p.workflow_id for p in graph.consumers_of("up1")] == ["w"]
    assert graph.producers_of("nothing") == []


def test_build_graph_enabled_only_if_every_block_is() -> None:
    mixed = build_graph(
        [produces("w", "a", {"enabled": True, "onUpstreamUpdate": True}), produces("w", "b", {})]
    )
    assert mixed.policies["w"].enabled
    one_off = build_graph([produces("w", "a", ON_UPDATE), produces("w", "b", {"enabled": False})])
    assert not one_off.policies["w"].enabled
    assert one_off.policies["w"].on_upstream_update
    none = build_graph([produces("w", "a"), consumes("w", "b")]).policies["w"]
    assert (none.has_block, none.enabled, none.on_upstream_update, none.priority) == (
        False,
        False,
        False,
        0,
    )


def test_build_graph_expiring_assets() -> None:
    graph = build_graph(
        [
            produces("w", "ttl", {}, freshness={"ttlMs": 1_000}),
            produces("w", "cadence", ON_UPDATE, freshness={"cadenceMs": 60_000}),
            produces("w", "no-block", None, freshness={"ttlMs": 1_000}),
            produces("w", "off", {"enabled": False}, freshness={"ttlMs": 1_000}),
            produces("w", "no-window", {}, freshness={"maxAgeMs": 5}),
            produces("w", "zero", {}, freshness={"ttlMs": 0}),
            produces("w", "no-freshness", {}),
            Declaration("w", "w", "s", "consumes", "upstream", {"ttlMs": 1_000}, {}),
        ]
    )
    expiring = graph.policies["w"].expiring
    assert set(expiring) == {"ttl", "cadence"}
    assert dict(expiring["cadence"]) == {"cadenceMs": 60_000}


def test_build_graph_indexes_several_workflows() -> None:
    graph = build_graph(
        [
            consumes("w2", "a"),
            produces("w1", "a", ON_UPDATE),
            produces("w2", "b", ON_UPDATE),
            consumes("w3", "a"),
            produces("w3", "a"),
        ]
    )
    assert sorted(graph.policies) == ["w1", "w2", "w3"]
    assert sorted(graph.consumers["a"]) == ["w2", "w3"]
    assert sorted(graph.producers["a"]) == ["w1", "w3"]


def test_replace_and_remove_a_workflow() -> None:
    graph = build_graph([produces("up", "raw"), consumes("down", "raw"), produces("down", "a")])
    graph.replace_workflow(
        "down",
        [
            consumes("down", "other", slug="renamed"),
            produces("down", "b", ON_UPDATE, slug="renamed"),
        ],
    )
    assert graph.consumers == {"other": ["down"]}
    assert graph.producers == {"raw": ["up"], "b": ["down"]}
    assert graph.policies["down"].workflow_slug == "renamed"
    assert graph.policies["down"].on_upstream_update
    graph.replace_workflow("new", [consumes("new", "raw")])
    assert [p.workflow_id for p in graph.consumers_of("raw")] == ["new"]
    graph.remove_workflow("down")
    graph.replace_workflow("up", [])
    assert sorted(graph.policies) == ["new"]
    assert graph.producers == {}
    graph.remove_workflow("never-known")


def test_rebuilding_one_workflow_at_a_time_equals_building_at_once() -> None:
    rows = [
        consumes("w2", "a"),
        produces("w1", "a", ON_UPDATE),
        produces("w2", "b", ON_UPDATE),
        consumes("w3", "b"),
        produces("w3", "c", {"priority": 2}),
    ]
    whole = build_graph(rows)
    piecewise = build_graph([produces("w2", "stale-version"), consumes("w9", "a")])
    piecewise.remove_workflow("w9")
    for workflow in ("w1", "w2", "w3"):
        piecewise.replace_workflow(workflow, [r for r in rows if r.workflow_id == workflow])
    assert piecewise.policies == whole.policies
    assert {k: sorted(v) for k, v in piecewise.consumers.items()} == {
        k: sorted(v) for k, v in whole.consumers.items()
    }
    assert {k: sorted(v) for k, v in piecewise.producers.items()} == {
        k: sorted(v) for k, v in whole.producers.items()
    }


def test_target_prefers_the_asset_that_follows_upstream() -> None:
    graph = build_graph(
        [
            Declaration("w", "w", "s", "produces", "a", None, {}, "A"),
            Declaration("w", "w", "s", "produces", "b", None, ON_UPDATE, "B.Report"),
        ]
    )
    policy = graph.policies["w"]
    assert policy.target == "b"
    assert policy.asset_id("b") == "B.Report"
    assert policy.asset_id("unknown") == "unknown"
    plain = build_graph([produces("v", "z"), produces("v", "y")]).policies["v"]
    assert plain.target == "y"


# --- the stateful model of the materializer service ---------------------------------------------

MODEL_BACKOFF = Backoff(base_ms=5_000, max_ms=40_000)
Key = tuple[str, str | None]
"""(workflow id, partition key)."""


@dataclass(frozen=True)
class WorkflowSpec:
    """One generated workflow: what it produces (each with its block) and consumes."""

    workflow_id: str
    slug: str
    blocks: dict[str, Block | None]
    consumes: tuple[str, ...]

    @property
    def produces(self) -> tuple[str, ...]:
        return tuple(sorted(self.blocks))

    @property
    def has_block(self) -> bool:
        return any(block is not None for block in self.blocks.values())

    @property
    def enabled(self) -> bool:
        blocks = [b for b in self.blocks.values() if b is not None]
        return bool(blocks) and all(b.get("enabled", True) for b in blocks)

    @property
    def auto_on_update(self) -> bool:
        """Enabled, with `onUpstreamUpdate` on some produced asset."""
        return self.enabled and any(b and b.get("onUpstreamUpdate") for b in self.blocks.values())

    @property
    def priority(self) -> int:
        priorities = [b["priority"] for b in self.blocks.values() if b and "priority" in b]
        return min(priorities, default=0)


@dataclass(frozen=True)
class GraphSpec:
    workflows: tuple[WorkflowSpec, ...]
    assets: tuple[str, ...]
    partitions: tuple[str | None, ...]
    declarations: tuple[Declaration, ...]

    def workflow(self, workflow_id: str) -> WorkflowSpec:
        return next(w for w in self.workflows if w.workflow_id == workflow_id)

    def consumers_of(self, asset: str) -> list[WorkflowSpec]:
        return [w for w in self.workflows if asset in w.consumes]


@st.composite
def auto_blocks(draw: st.DrawFn) -> Block | None:
    """Mostly a block, mostly with onUpstreamUpdate, rarely disabled."""
    if not draw(st.sampled_from([True, True, True, True, False])):
        return None
    block: Block = {"onUpstreamUpdate": draw(st.sampled_from([True, True, True, False]))}
    if draw(st.booleans()):
        block["priority"] = draw(st.integers(0, 3))
    enabled = draw(st.sampled_from([None, None, None, True, True, False]))
    if enabled is not None:
        block["enabled"] = enabled
    return block


@st.composite
def graph_specs(draw: st.DrawFn) -> GraphSpec:
    assets = tuple(f"a{index}" for index in range(draw(st.integers(2, 4))))
    slugs = draw(st.permutations(["alpha", "bravo", "charlie", "delta"]))
    workflows = []
    for index in range(draw(st.integers(2, 4))):
        produced = draw(st.lists(st.sampled_from(assets), min_size=1, max_size=2, unique=True))
        others = [asset for asset in assets if asset not in produced]
        wanted = min(len(others), 0 if index == 0 else 1)  # w0 is a source; the rest consume
        consumed = (
            draw(st.lists(st.sampled_from(others), min_size=wanted, max_size=2, unique=True))
            if others
            else []
        )
        if draw(st.sampled_from([False, False, False, True])):
            consumed.append(produced[0])  # now and then a workflow that consumes its own output
        blocks = {asset: draw(auto_blocks()) for asset in produced}
        consumes = tuple(sorted(set(consumed)))
        workflows.append(WorkflowSpec(f"w{index}", slugs[index], blocks, consumes))
    declarations = [
        Declaration(w.workflow_id, w.slug, "step", "produces", asset, None, block)
        for w in workflows
        for asset, block in w.blocks.items()
    ] + [
        Declaration(w.workflow_id, w.slug, "step", "consumes", asset)
        for w in workflows
        for asset in w.consumes
    ]
    partitions = draw(st.sampled_from([(None,), ("p1", "p2")]))
    return GraphSpec(
        tuple(workflows), assets, partitions, tuple(draw(st.permutations(declarations)))
    )


@dataclass
class Run:
    """An in-flight auto run: the claim on its (workflow, partition), and why it runs."""

    run_id: str
    workflow_id: str
    partition: str | None
    started_at: datetime
    cause: Pending
    coalesced_at: datetime | None = None

    @property
    def key(self) -> Key:
        return (self.workflow_id, self.partition)


@dataclass(frozen=True)
class Event:
    event_id: str
    asset: str
    producer: str
    partition: str | None
    produced_at: datetime


@dataclass
class Recorded:
    """One decision recorded for (event id, consumer, partition)."""

    event_id: str
    workflow_id: str
    partition: str | None
    decision: Decision


def expected_outcome(
    consumer: WorkflowSpec,
    event: Event,
    latest: datetime | None,
    in_flight: bool,
    cooldown_until: datetime | None,
    now: datetime,
) -> tuple[str, str]:
    """The contract's decision order, computed from the generated spec (an oracle)."""
    if consumer.workflow_id == event.producer:
        return ("skipped", "self-produced")
    if not consumer.has_block:
        return ("skipped", "no-policy")
    if not consumer.enabled:
        return ("skipped", "disabled")
    if not consumer.auto_on_update:
        return ("skipped", "no-policy")
    if latest is not None and latest >= event.produced_at:
        return ("skipped", "not-stale")
    if in_flight:
        return ("coalesced", "in-flight")
    if cooldown_until is not None and cooldown_until > now:
        return ("deferred", "cooldown")
    return ("launched", "upstream-update")


class MaterializerModel(RuleBasedStateMachine):
    """The materializer service over plain dicts, driven by productions, completions and ticks.

    It does what the worker does with each decision: a launch claims the (workflow,
    partition); a coalesce notes the newest upstream on the claim; a deferral keeps the work
    until the cooldown ends; a failed run keeps its own work (and any owed follow-up) for then.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spec: GraphSpec | None = None
        self.graph = AssetGraph()
        self.now = T0
        self.ids = itertools.count(1)
        self.latest: dict[Key, datetime] = {}
        """Latest production of any asset a workflow produces, per (workflow, partition)."""
        self.asset_latest: dict[tuple[str, str | None], datetime] = {}
        self.runs: dict[str, Run] = {}
        self.failures: dict[Key, int] = {}
        self.cooldown: dict[Key, datetime | None] = {}
        self.pending: dict[Key, Pending] = {}
        """Work owed to a (workflow, partition) when its cooldown ends."""
        self.events: list[Event] = []
        self.recorded: list[Recorded] = []

    # -- helpers ------------------------------------------------------------------------------

    @property
    def model(self) -> GraphSpec:
        assert self.spec is not None
        return self.spec

    def in_flight(self, key: Key) -> Run | None:
        return next((run for run in self.runs.values() if run.key == key), None)

    def cooling(self, key: Key) -> bool:
        until = self.cooldown.get(key)
        return until is not None and until > self.now

    def state(self, key: Key) -> WorkflowState:
        run = self.in_flight(key)
        return WorkflowState(
            latest_production=self.latest.get(key),
            in_flight_run=run.run_id if run else None,
            cooldown_until=self.cooldown.get(key),
        )

    def launch(self, key: Key, cause: Pending) -> None:
        """Claim (workflow, partition) for a new auto run starting now."""
        assert self.in_flight(key) is None, f"second auto run in flight for {key}"
        run_id = f"run-{next(self.ids)}"
        self.runs[run_id] = Run(run_id, key[0], key[1], self.now, cause)

    def production(self, asset: str, producer: str, partition: str | None) -> None:
        """Record a production at now and handle its `asset.produced` event."""
        event = Event(f"evt-{next(self.ids)}", asset, producer, partition, self.now)
        self.events.append(event)
        self.latest[(producer, partition)] = self.now
        self.asset_latest[(asset, partition)] = self.now
        consumers = self.model.consumers_of(asset)
        states = {c.workflow_id: self.state((c.workflow_id, partition)) for c in consumers}
        decisions = decide_upstream_update(
            self.graph, asset, producer, event.produced_at, states, self.now
        )
        expected_order = sorted(consumers, key=lambda c: (c.priority, c.slug))
        assert [d.workflow_id for d in decisions] == [c.workflow_id for c in expected_order]
        for decision in decisions:
            key = (decision.workflow_id, partition)
            state = states[decision.workflow_id]
            expected = expected_outcome(
                self.model.workflow(decision.workflow_id),
                event,
                state.latest_production,
                state.in_flight_run is not None,
                state.cooldown_until,
                self.now,
            )
            assert (decision.outcome, decision.reason) == expected, (event, state)
            self.recorded.append(
                Recorded(event.event_id, decision.workflow_id, partition, decision)
            )
            work = Pending("upstream-update", event.produced_at)
            if decision.outcome == "launched":
                self.launch(key, work)
            elif decision.outcome == "coalesced":
                run = self.in_flight(key)
                assert run is not None
                if run.coalesced_at is None or run.coalesced_at < event.produced_at:
                    run.coalesced_at = event.produced_at
            elif decision.outcome == "deferred":
                self.pending[key] = merge_pending(self.pending.get(key), work)

    def finish(self, run: Run, succeeded: bool) -> None:
        """The run ends: its productions, then the completion rules, then the claim is gone."""
        workflow = self.model.workflow(run.workflow_id)
        if succeeded:
            for asset in workflow.produces:
                self.production(asset, run.workflow_id, run.partition)
        completion = on_run_completed(
            "succeeded" if succeeded else "failed",
            self.failures.get(run.key, 0),
            run.coalesced_at,
            run.started_at,
            self.now,
            MODEL_BACKOFF,
        )
        owed = run.coalesced_at is not None and run.coalesced_at > run.started_at
        assert completion.follow_up == (owed and succeeded)
        assert completion.follow_up_deferred == (owed and not succeeded)
        del self.runs[run.run_id]
        self.failures[run.key] = completion.failures
        self.cooldown[run.key] = completion.cooldown_until
        if completion.follow_up:
            self.launch(run.key, Pending(FOLLOW_UP, run.coalesced_at))
        if not succeeded:
            kept = merge_pending(self.pending.get(run.key), run.cause)
            if completion.follow_up_deferred:
                kept = merge_pending(kept, Pending(FOLLOW_UP, run.coalesced_at))
            self.pending[run.key] = kept

    def advance(self, seconds: float) -> None:
        """Move the clock; every cooldown that ended has its owed work decided again."""
        assert seconds >= 0
        self.now += timedelta(seconds=seconds)
        for key in sorted(self.pending, key=str):
            if self.in_flight(key) is not None or self.cooling(key):
                continue
            work = self.pending.pop(key)
            decision = decide_after_cooldown(
                self.graph.policies[key[0]], work, self.state(key), self.now
            )
            assert decision is not None
            latest = self.latest.get(key)
            needed = work.forced or latest is None or latest < (work.produced_at or T0)
            if needed:
                assert (decision.outcome, decision.reason) == ("launched", work.reason)
                self.launch(key, work)
            else:
                assert (decision.outcome, decision.reason) == ("skipped", "not-stale")

    def settle_all(self) -> None:
        """Complete every run successfully and tick past every cooldown until all is quiet."""
        for _ in range(100):
            completions = 0
            while self.runs:
                completions += 1
                assert completions < 1_000, "runs keep launching each other at a frozen clock"
                self.finish(next(iter(self.runs.values())), True)
            pending = [u for u in self.cooldown.values() if u is not None and u > self.now]
            self.advance((max(pending) - self.now).total_seconds() if pending else 0)
            if not self.runs:
                break
        else:
            raise AssertionError("the materializer never settled")
        assert not self.pending, self.pending
        self.check_fresh()

    def check_fresh(self) -> None:
        """Every enabled onUpstreamUpdate consumer is as new as its upstreams (or cooling)."""
        for workflow in self.model.workflows:
            if not workflow.auto_on_update:
                continue
            for partition in self.model.partitions:
                key = (workflow.workflow_id, partition)
                if self.cooling(key):
                    continue
                latest = self.latest.get(key)
                for asset in workflow.consumes:
                    upstream = self.asset_latest.get((asset, partition))
                    if upstream is not None:
                        assert latest is not None, (key, asset)
                        assert latest >= upstream, (key, asset)

    # -- rules --------------------------------------------------------------------------------

    @initialize(spec=graph_specs())
    def setup(self, spec: GraphSpec) -> None:
        self.spec = spec
        self.graph = build_graph(spec.declarations)

    @rule(data=st.data())
    def produce(self, data: st.DataObject) -> None:
        pairs = [(a, w.workflow_id) for w in self.model.workflows for a in w.produces]
        asset, producer = data.draw(st.sampled_from(pairs), label="asset, producer")
        partition = data.draw(st.sampled_from(self.model.partitions), label="partition")
        self.production(asset, producer, partition)

    @precondition(lambda self: bool(self.runs))
    @rule(data=st.data(), succeeded=st.booleans())
    def complete(self, data: st.DataObject, succeeded: bool) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.runs)), label="run")
        self.finish(self.runs[run_id], succeeded)

    @rule(seconds=st.sampled_from([0, 0, 1, 2, 3, 5, 8, 13, 20]))
    def tick(self, seconds: int) -> None:
        self.advance(seconds)

    @rule()
    def settle(self) -> None:
        self.settle_all()

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def one_decision_per_consumer_per_event(self) -> None:
        counts = Counter((r.event_id, r.workflow_id, r.partition) for r in self.recorded)
        expected = Counter(
            (event.event_id, consumer.workflow_id, event.partition)
            for event in self.events
            for consumer in self.model.consumers_of(event.asset)
        )
        assert counts == expected

    @invariant()
    def at_most_one_run_in_flight_per_workflow_partition(self) -> None:
        keys = Counter(run.key for run in self.runs.values())
        assert all(count == 1 for count in keys.values()), keys

    def teardown(self) -> None:
        if self.spec is not None:
            self.settle_all()


MaterializerModel.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
TestMaterializerModel = MaterializerModel.TestCase
