"""The DAG builder, checked against an independent oracle on random graphs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apphub.domain.dag import StepNode, build_dag, find_cycle
from apphub.domain.errors import DefinitionError


@st.composite
def acyclic_graphs(draw: st.DrawFn) -> list[StepNode]:
    """Edges only go from an earlier-ranked step to a later one; declared in a shuffled order."""
    size = draw(st.integers(min_value=1, max_value=40))
    ids = [f"s{index}" for index in range(size)]
    nodes = []
    for rank, step_id in enumerate(ids):
        earlier = ids[:rank]
        deps = draw(st.lists(st.sampled_from(earlier), max_size=5, unique=True)) if earlier else []
        nodes.append(StepNode(step_id, tuple(deps)))
    return draw(st.permutations(nodes))


@st.composite
def any_graphs(draw: st.DrawFn) -> list[StepNode]:
    size = draw(st.integers(min_value=1, max_value=15))
    ids = [f"s{index}" for index in range(size)]
    return [
        StepNode(step_id, tuple(draw(st.lists(st.sampled_from(ids), max_size=4, unique=True))))
        for step_id in ids
    ]


def _has_cycle(nodes: list[StepNode]) -> bool:
    """Oracle: repeatedly remove steps whose dependencies are all removed."""
    remaining = {node.id: set(node.depends_on) for node in nodes}
    while True:
        free = [step for step, deps in remaining.items() if not deps & remaining.keys()]
        if not free:
            return bool(remaining)
        for step in free:
            del remaining[step]


@settings(max_examples=300)
@given(acyclic_graphs())
def test_acyclic_graphs_are_accepted_in_a_valid_order(nodes: list[StepNode]) -> None:
    dag = build_dag(nodes)
    position = {step: index for index, step in enumerate(dag.topological_order)}
    assert sorted(position) == sorted(node.id for node in nodes)
    for node in nodes:
        for dependency in node.depends_on:
            assert position[dependency] < position[node.id]
            assert node.id in dag.adjacency[dependency]
            assert (dependency, node.id) in dag.edges
    assert dag.roots == [node.id for node in nodes if not node.depends_on]
    assert len(dag.edges) == sum(len(node.depends_on) for node in nodes)


@settings(max_examples=300)
@given(any_graphs())
def test_cycles_are_rejected_with_a_real_cycle(nodes: list[StepNode]) -> None:
    depends_on = {node.id: set(node.depends_on) for node in nodes}
    if not _has_cycle(nodes):
        build_dag(nodes)
        return
    with pytest.raises(DefinitionError) as raised:
        build_dag(nodes)
    assert raised.value.reason == "cycle_detected"
    cycle = raised.value.detail["cycle"]
    assert cycle
    assert len(set(cycle)) == len(cycle)
    for index, step in enumerate(cycle):
        follower = cycle[(index + 1) % len(cycle)]
        assert step in depends_on[follower], f"{follower} does not depend on {step}"


def test_order_is_stable_by_declaration() -> None:
    nodes = [StepNode("b", ()), StepNode("a", ()), StepNode("c", ("a", "b"))]
    assert build_dag(nodes).topological_order == ["b", "a", "c"]


def test_self_dependency_is_a_cycle_of_one() -> None:
    with pytest.raises(DefinitionError) as raised:
        build_dag([StepNode("a", ("a",))])
    assert raised.value.detail == {"cycle": ["a"]}


def test_repeated_dependency_counts_once() -> None:
    dag = build_dag([StepNode("a", ()), StepNode("b", ("a", "a"))])
    assert dag.edges == [("a", "b")]
    assert dag.topological_order == ["a", "b"]


def test_long_chain_needs_no_recursion() -> None:
    nodes = [StepNode("s0", ())] + [StepNode(f"s{i}", (f"s{i - 1}",)) for i in range(1, 5000)]
    assert len(build_dag(nodes).topological_order) == 5000
    adjacency = {node.id: [] for node in nodes}
    for node in nodes:
        for dependency in node.depends_on:
            adjacency[dependency].append(node.id)
    adjacency["s4999"].append("s0")
    assert len(find_cycle(adjacency)) == 5000
