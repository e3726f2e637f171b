"""Build and check a workflow's dependency graph: duplicates, missing dependencies, cycles."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from apphub.domain.errors import DefinitionError


@dataclass(frozen=True, slots=True)
class StepNode:
    """The only part of a step the graph needs."""

    id: str
    depends_on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Dag:
    adjacency: dict[str, list[str]]
    """Step id → the steps that depend on it, in declaration order."""
    roots: list[str]
    topological_order: list[str]
    edges: list[tuple[str, str]]
    """(dependency, dependent) pairs."""

    def as_json(self) -> dict[str, object]:
        return {
            "adjacency": self.adjacency,
            "roots": self.roots,
            "topologicalOrder": self.topological_order,
            "edges": [{"from": source, "to": target} for source, target in self.edges],
        }


def build_dag(nodes: Sequence[StepNode]) -> Dag:
    """Validate the graph and return its views; ties in the order follow declaration order."""
    position = _positions(nodes)
    adjacency: dict[str, list[str]] = {node.id: [] for node in nodes}
    edges: list[tuple[str, str]] = []
    for node in nodes:
        for dependency in _unique(node.depends_on):
            if dependency not in position:
                raise DefinitionError(
                    f"step {node.id!r} depends on unknown step {dependency!r}",
                    reason="missing_dependency",
                    detail={"stepId": node.id, "dependencyId": dependency},
                )
            adjacency[dependency].append(node.id)
            edges.append((dependency, node.id))
    for dependents in adjacency.values():
        dependents.sort(key=position.__getitem__)
    order = _topological_order(nodes, adjacency, position)
    if len(order) < len(nodes):
        cycle = find_cycle(adjacency)
        raise DefinitionError(
            "workflow steps form a cycle: " + " -> ".join([*cycle, cycle[0]]),
            reason="cycle_detected",
            detail={"cycle": cycle},
        )
    roots = [node.id for node in nodes if not node.depends_on]
    return Dag(adjacency=adjacency, roots=roots, topological_order=order, edges=edges)


def _positions(nodes: Sequence[StepNode]) -> dict[str, int]:
    position: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if node.id in position:
            raise DefinitionError(
                f"step id {node.id!r} is used more than once",
                reason="duplicate_step",
                detail={"stepId": node.id},
            )
        position[node.id] = index
    return position


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _topological_order(
    nodes: Sequence[StepNode], adjacency: dict[str, list[str]], position: dict[str, int]
) -> list[str]:
    """Kahn's algorithm; a heap keyed by declaration position keeps the order stable."""
    indegree = {node.id: len(_unique(node.depends_on)) for node in nodes}
    ready = [position[step] for step, degree in indegree.items() if degree == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        step = nodes[heapq.heappop(ready)].id
        order.append(step)
        for dependent in adjacency[step]:
            indegree[dependent] -= 1
            if indegree[dependent] == 0:
                heapq.heappush(ready, position[dependent])
    return order


def find_cycle(adjacency: dict[str, list[str]]) -> list[str]:
    """One cycle, as the step ids along its edges; empty when the graph is acyclic.

    Iterative depth-first search, so a 100-step chain cannot hit the recursion limit.
    """
    visiting, done = 1, 2
    state: dict[str, int] = {}
    for start in adjacency:
        if state.get(start):
            continue
        path: list[str] = [start]
        iterators = [iter(adjacency[start])]
        state[start] = visiting
        while iterators:
            next_step = next(iterators[-1], None)
            if next_step is None:
                state[path.pop()] = done
                iterators.pop()
            elif state.get(next_step) == visiting:
                return path[path.index(next_step) :]
            elif not state.get(next_step):
                state[next_step] = visiting
                path.append(next_step)
                iterators.append(iter(adjacency[next_step]))
    return []
