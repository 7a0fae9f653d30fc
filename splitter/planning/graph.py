"""The reference formulation: a layered DAG in networkx, solved by cheapest-first path enumeration.

Nodes are ``(k, d)`` — "the stage on device d has produced cut k" — plus the controller as
source and sink. An edge ``(a, d) → (b, e)`` is one stage on ``e`` over slices ``[a, b)``: the
link d → e for cut a, then e's compute; it exists only where ``[a, b)`` fits in e's memory and
e ≠ d. Every source → sink path is a plan, but a path may revisit a device (A → B → A). So
paths are enumerated cheapest first (``nx.shortest_simple_paths``): the first one that uses no
device twice (and no more than the stage limit) is optimal.

Throughput: the smallest threshold θ for which the graph restricted to edges whose link and
compute both take ≤ θ still holds a valid path (binary search over the edge costs); among
those paths the cheapest by latency is taken. Exponential in the worst case: it is the
readable reference the fast search (search.py) is tested against, for small problems.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice, pairwise

import networkx as nx

from splitter.planning.problem import Problem, Stage, evaluate

SOURCE = "controller-in"
SINK = "controller-out"


def build_graph(problem: Problem) -> nx.DiGraph:
    """The layered DAG with ``transfer_ms``, ``compute_ms``, ``weight`` and ``stage`` on edges."""
    G = nx.DiGraph()
    L, D = problem.n_slices, problem.n_devices
    G.add_node(SOURCE)
    G.add_node(SINK)
    for a in range(L):
        for e in range(D):
            for b in range(a + 1, int(problem.reach[e, a]) + 1):
                compute = problem.compute_ms(e, a, b)
                senders = (
                    [(SOURCE, float(problem.transfer_in[e]))]
                    if a == 0
                    else [((a, d), float(problem.transfer[d, e, a])) for d in range(D) if d != e]
                )
                for node, transfer in senders:
                    G.add_edge(
                        node,
                        (b, e),
                        transfer_ms=transfer,
                        compute_ms=compute,
                        weight=transfer + compute,
                        stage=(e, a, b),
                    )
    for d in range(D):
        if (L, d) in G:
            out = float(problem.transfer_out[d])
            G.add_edge((L, d), SINK, transfer_ms=out, compute_ms=0.0, weight=out, stage=None)
    return G


def _stages(G: nx.DiGraph, path: list) -> list[Stage]:
    return [G.edges[u, v]["stage"] for u, v in pairwise(path) if G.edges[u, v]["stage"]]


def _first_valid(G: nx.DiGraph, problem: Problem, limit: int | None) -> list[Stage] | None:
    """Cheapest path (by latency) that uses each device at most once, within the stage limit."""
    if SOURCE not in G or SINK not in G or not nx.has_path(G, SOURCE, SINK):
        return None
    paths: Iterable[list] = nx.shortest_simple_paths(G, SOURCE, SINK, weight="weight")
    for path in islice(paths, limit):
        stages = _stages(G, path)
        devices = [s[0] for s in stages]
        if len(set(devices)) == len(devices) and len(stages) <= problem.max_stages:
            return stages
    return None


def reference_latency(problem: Problem, limit: int | None = None) -> list[Stage] | None:
    """Minimum-latency plan, or None when no valid plan exists (within ``limit`` paths)."""
    return _first_valid(build_graph(problem), problem, limit)


def reference_throughput(problem: Problem, limit: int | None = None) -> list[Stage] | None:
    """Minimum-bottleneck plan (then minimum latency), or None when no valid plan exists."""
    G = build_graph(problem)
    costs = sorted({max(c["transfer_ms"], c["compute_ms"]) for _, _, c in G.edges(data=True)})

    def restricted(theta: float) -> nx.DiGraph:
        return nx.subgraph_view(
            G, filter_edge=lambda u, v: max(G[u][v]["transfer_ms"], G[u][v]["compute_ms"]) <= theta
        )

    lo, hi = 0, len(costs) - 1
    if not costs or _first_valid(restricted(costs[hi]), problem, limit) is None:
        return None
    while lo < hi:  # smallest index whose threshold still admits a valid plan
        mid = (lo + hi) // 2
        if _first_valid(restricted(costs[mid]), problem, limit) is not None:
            hi = mid
        else:
            lo = mid + 1
    return _first_valid(restricted(costs[lo]), problem, limit)


def reference_solve(problem: Problem, objective: str) -> tuple[list[Stage], float, float] | None:
    """Plan, latency, bottleneck by the reference method for ``objective``."""
    solve = reference_latency if objective == "latency" else reference_throughput
    stages = solve(problem)
    if stages is None:
        return None
    return (stages, *evaluate(problem, stages))
