"""The reference formulation: a layered DAG in networkx, solved by cheapest-first path enumeration.

Nodes are ``(k, d)`` — "the stage on device d has produced cut k" — plus the controller as
source and sink. An edge ``(a, d) → (b, e)`` is one stage on ``e`` over slices ``[a, b)``: the
link d → e for cut a, then e's compute; it exists only where ``[a, b)`` fits in e's memory and
e ≠ d. Every source → sink path is a plan, but a path may revisit a device (A → B → A). So
paths are enumerated cheapest first (``nx.shortest_simple_paths``): the first one that uses no
device twice (and no more than the stage limit) is optimal.

Throughput needs a yes/no "is there a valid path using only steps <= θ?", which path
enumeration answers slowly when the answer is no; so it runs on a state graph whose nodes
also carry the set of devices used (``build_state_graph``), where every path is valid.

Both are exponential in the worst case: they are the readable references the fast search
(search.py) is tested against, on small problems.
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


def build_state_graph(problem: Problem) -> nx.DiGraph:
    """The same DAG with the used-device set carried in each node: ``(k, d, used)``.

    Every source → sink path is then a valid plan (no device twice, at most max_stages), so
    plain graph algorithms apply; the price is 2^D times more nodes: small problems only.
    """
    G = nx.DiGraph()
    L, D = problem.n_slices, problem.n_devices
    frontier = [(SOURCE, 0, -1, frozenset())]
    seen = {SOURCE}
    while frontier:
        node, a, d, used = frontier.pop()
        if a == L:
            out = float(problem.transfer_out[d])
            G.add_edge(node, SINK, transfer_ms=out, compute_ms=0.0, weight=out, stage=None)
            continue
        if len(used) >= problem.max_stages:
            continue
        for e in range(D):
            if e in used:
                continue
            transfer = float(problem.transfer_in[e] if d < 0 else problem.transfer[d, e, a])
            for b in range(a + 1, int(problem.reach[e, a]) + 1):
                compute = problem.compute_ms(e, a, b)
                nxt = (b, e, used | {e})
                G.add_edge(
                    node,
                    nxt,
                    transfer_ms=transfer,
                    compute_ms=compute,
                    weight=transfer + compute,
                    stage=(e, a, b),
                )
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append((nxt, b, e, used | {e}))
    return G


def reference_throughput(problem: Problem) -> list[Stage] | None:
    """Minimum-bottleneck plan (then minimum latency), or None when no valid plan exists.

    On the state graph: binary search for the smallest threshold θ (over the steps' costs)
    at which a source → sink path uses only links and stages taking <= θ, then the shortest
    such path by latency.
    """
    G = build_state_graph(problem)
    if SINK not in G:
        return None

    def step(u, v) -> float:
        return max(G[u][v]["transfer_ms"], G[u][v]["compute_ms"])

    costs = sorted({step(u, v) for u, v in G.edges})

    def restricted(theta: float) -> nx.DiGraph:
        return nx.subgraph_view(G, filter_edge=lambda u, v: step(u, v) <= theta)

    lo, hi = 0, len(costs) - 1
    while lo < hi:  # smallest index whose threshold still connects source and sink
        mid = (lo + hi) // 2
        if nx.has_path(restricted(costs[mid]), SOURCE, SINK):
            hi = mid
        else:
            lo = mid + 1
    H = restricted(costs[lo])
    return _stages(H, nx.shortest_path(H, SOURCE, SINK, weight="weight"))


def reference_solve(problem: Problem, objective: str) -> tuple[list[Stage], float, float] | None:
    """Plan, latency, bottleneck by the reference method for ``objective``."""
    solve = reference_latency if objective == "latency" else reference_throughput
    stages = solve(problem)
    if stages is None:
        return None
    return (stages, *evaluate(problem, stages))
