"""Exact placement: best-first (A*) label search with "each device at most once".

A label is a partial plan: its stages end at cut ``k`` on device ``d``, having used the device
set ``mask``, at cost ``g = (latency, bottleneck)``. Its key adds the relaxation's cost-to-go
(relaxation.py), which never overestimates, so the first complete plan popped is optimal.

Latency: lexicographic (latency, bottleneck). Throughput (``_throughput``): the smallest
bottleneck θ* by the furthest-reach relaxation, the DP over (used set, device, cut) of
subset_dp.py, or the branch and bound of bottleneck.py; the answer is the lowest-latency plan
at θ* (the same DP, or this A* on the graph cut down to steps <= θ*).

What keeps it fast: a label is dropped when another at the same (k, d) costs no more and used a
subset of its devices (whatever completes one completes the other as cheaply); a child is
dropped when even the relaxation needs more stages than remain; children are generated
lazily in key order (partial expansion); a greedy dive and the baselines give an early
incumbent that prunes everything costlier.

A time budget stops the search: the answer is then the best plan found, with a proven lower
bound (smallest open key, or the largest θ proven infeasible), so a gap is stated, never hidden.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field, replace
from itertools import count

import numpy as np

from splitter.planning.bottleneck import Budget, feasible_under, min_bottleneck
from splitter.planning.problem import Problem, Stage, evaluate, is_valid
from splitter.planning.relaxation import Bounds, coverage, penalised_latency, relaxed_bounds
from splitter.planning.subset_dp import (
    DP_SHARE,
    RELAX_MAX_DEVICES,
    SURE_STATES,
    dense_fits,
    dense_states,
    furthest_bound,
    furthest_feasible,
)
from splitter.planning.subset_dp import solve as subset_solve

OBJECTIVES = ("latency", "throughput")
DIVE_NODES = 3000
# Throughput: share of the remaining budget spent finding the fastest of the max-throughput
# plans (the tie-break); the bottleneck itself is exact before this starts.
TIE_BREAK_SHARE = 0.25
# Latency: share of the budget spent raising the lower bound with Lagrangian penalties.
LAGRANGE_SHARE = 0.15
LAGRANGE_ROUNDS = 40
# Throughput: quick bisection probes before the exact branch and bound, each allowed this
# share of the remaining budget.
BISECT_PROBES = 12
BISECT_SHARE = 0.05
# Throughput, larger fleets: share of the remaining budget for the furthest-reach bound.
RELAX_SHARE = 0.2
# Throughput tie-break: the latency DP at θ* up to this many (set, device, cut) states
# (200 × 13), with DP_SHARE of the remaining budget when the bottleneck DP was not used.
TIE_DP_STATES = 24_000_000


@dataclass
class SearchResult:
    """The best plan found and how sure we are of it."""

    objective: str
    stages: list[Stage] | None  # None: no valid plan (proven when ``optimal``-style exhausted)
    latency_ms: float
    bottleneck_ms: float
    optimal: bool  # proven optimal (or, with stages None, proven infeasible)
    lower_bound: float  # proven: no valid plan has a smaller objective
    budget_hit: bool
    expansions: int
    wall_s: float
    relaxed_bound: float  # the relaxation alone (devices reusable)
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def objective_value(self) -> float:
        return self.latency_ms if self.objective == "latency" else self.bottleneck_ms

    @property
    def gap(self) -> float:
        return max(0.0, self.objective_value - self.lower_bound) if self.stages else np.inf


@dataclass
class _Label:
    k: int
    d: int
    mask: int
    stages_used: int
    g_lat: float
    g_bot: float
    parent: _Label | None
    stage: Stage | None
    alive: bool = True


@dataclass
class _Expansion:
    """A label's children, sorted by key, handed out one at a time."""

    parent: _Label
    e: np.ndarray
    b: np.ndarray
    k0: np.ndarray
    k1: np.ndarray
    g_lat: np.ndarray
    g_bot: np.ndarray
    cursor: int = 0

    def child(self, i: int) -> _Label:
        e, b, p = int(self.e[i]), int(self.b[i]), self.parent
        return _Label(
            b, e, p.mask | (1 << e), p.stages_used + 1, float(self.g_lat[i]),
            float(self.g_bot[i]), p, (e, p.k, b),
        )  # fmt: skip


def _key(obj: int, lat: float, bot: float) -> tuple[float, float]:
    return (lat, bot) if obj == 0 else (bot, lat)


def _dominates(obj: int, a: _Label, b: _Label) -> bool:
    """True when every completion of ``b`` is matched at no higher cost by ``a``."""
    if a.mask & ~b.mask:
        return False
    if obj == 0:  # latency first: a strictly smaller sum wins whatever the bottleneck
        return a.g_lat < b.g_lat or (a.g_lat == b.g_lat and a.g_bot <= b.g_bot)
    return a.g_bot <= b.g_bot and a.g_lat <= b.g_lat


def _stages_of(label: _Label) -> list[Stage]:
    out: list[Stage] = []
    node: _Label | None = label
    while node is not None and node.stage is not None:
        out.append(node.stage)
        node = node.parent
    return out[::-1]


def _final_key(problem: Problem, obj: int, label: _Label, theta: float) -> tuple[float, float]:
    out = float(problem.transfer_out[label.d])
    if out > theta:
        return (np.inf, np.inf)
    return _key(obj, label.g_lat + out, max(label.g_bot, out))


def _expand(
    problem: Problem,
    bounds: Bounds,
    obj: int,
    label: _Label,
    cap: float,
    furthest: bool = False,
) -> _Expansion | None:
    """Children of ``label`` whose key's first part is <= ``cap``, cheapest (or furthest) first."""
    L, D, k, d = problem.n_slices, problem.n_devices, label.k, label.d
    allowed = [e for e in range(D) if not (label.mask >> e) & 1]
    if not allowed or label.stages_used >= problem.max_stages:
        return None
    E = np.array(allowed)
    stops = np.arange(k + 1, L + 1)
    comp = problem.prefix_ms[E, k + 1 :] - problem.prefix_ms[E, k][:, None]
    tr = problem.transfer_in[E] if d < 0 else problem.transfer[d, E, k]
    theta = bounds.theta
    valid = (stops[None, :] <= problem.reach[E, k][:, None]) & (comp <= theta)
    valid &= (tr <= theta)[:, None]
    # the relaxation's fewest stages to finish must still fit under the stage limit
    valid &= (label.stages_used + 1 + bounds.min_stages[k + 1 :] <= problem.max_stages)[None, :]
    # the devices left after this child must be able to cover the rest (exact pruning)
    rest = L - stops
    cover = np.minimum(bounds.cover[E, k + 1 :], rest[None, :])
    valid &= (cover.sum(axis=0)[None, :] - cover) >= rest[None, :]
    g_lat = (label.g_lat + tr)[:, None] + comp
    g_bot = np.maximum(np.maximum(label.g_bot, tr)[:, None], comp)
    f_lat = g_lat + bounds.latency[k + 1 :, E].T
    if bounds.penalty is not None:  # Lagrangian: subtract the penalties of devices left unused
        lam = bounds.penalty
        unused = lam.sum() - sum(lam[f] for f in range(D) if (label.mask >> f) & 1) - lam[E]
        f_lat = f_lat - np.where(stops[None, :] < L, unused[:, None], 0.0)
    f_bot = np.maximum(g_bot, bounds.bottleneck[k + 1 :, E].T)
    first, second = (f_lat, f_bot) if obj == 0 else (f_bot, f_lat)
    rows, cols = np.nonzero(valid & (first <= cap) & np.isfinite(first))
    if rows.size == 0:
        return None
    k0, k1 = first[rows, cols], second[rows, cols]
    order = np.lexsort((k1, -cols)) if furthest else np.lexsort((k1, k0))
    rows, cols = rows[order], cols[order]
    return _Expansion(
        label, E[rows], cols + k + 1, k0[order], k1[order], g_lat[rows, cols], g_bot[rows, cols]
    )


def _root() -> _Label:
    return _Label(0, -1, 0, 0, 0.0, 0.0, None, None)


def _dive(
    problem: Problem, bounds: Bounds, obj: int, deadline: float, furthest: bool = False
) -> list[Stage] | None:
    """Greedy depth-first: cheapest (or furthest-reaching) child first, backtracking on dead
    ends, for at most DIVE_NODES children: any valid plan, fast, to prune the exact search."""
    first = _expand(problem, bounds, obj, _root(), np.inf, furthest)
    stack = [first] if first else []
    nodes = 0
    while stack and nodes < DIVE_NODES and time.perf_counter() < deadline:
        exp = stack[-1]
        if exp.cursor >= len(exp.k0):
            stack.pop()
            continue
        child = exp.child(exp.cursor)
        exp.cursor += 1
        nodes += 1
        if child.k == problem.n_slices:
            if np.isfinite(_final_key(problem, obj, child, bounds.theta)[0]):
                return _stages_of(child)
            continue
        nxt = _expand(problem, bounds, obj, child, np.inf, furthest)
        if nxt is not None:
            stack.append(nxt)
    return None


@dataclass
class _Outcome:
    key: tuple[float, float]
    stages: list[Stage] | None
    exhausted: bool  # the search finished: ``stages`` is optimal (None: no plan exists)
    open_bound: float  # smallest first key left open (valid lower bound when not exhausted)
    expansions: int


def _best_first(
    problem: Problem,
    bounds: Bounds,
    obj: int,
    deadline: float,
    incumbent: tuple[tuple[float, float], list[Stage] | None],
) -> _Outcome:
    """A* over labels; returns when the best plan is proven optimal or the deadline passes."""
    L = problem.n_slices
    best_key, best_stages = incumbent
    tie = count()
    start = _key(obj, bounds.start_latency, bounds.start_bottleneck)
    heap: list[tuple[float, float, int, object]] = [(*start, next(tie), _root())]
    labels_at: dict[tuple[int, int], list[_Label]] = {}
    expansions = 0
    while heap:
        if (heap[0][0], heap[0][1]) >= best_key:
            return _Outcome(best_key, best_stages, True, best_key[0], expansions)
        if expansions % 32 == 0 and time.perf_counter() > deadline:
            return _Outcome(best_key, best_stages, False, heap[0][0], expansions)
        _, _, _, item = heapq.heappop(heap)
        if isinstance(item, _Label):
            if not item.alive:
                continue
            expansions += 1
            exp = _expand(problem, bounds, obj, item, best_key[0])
            if exp is not None:
                heapq.heappush(heap, (exp.k0[0], exp.k1[0], next(tie), exp))
            continue
        exp = item
        if not exp.parent.alive:
            continue
        i = exp.cursor
        exp.cursor += 1
        if exp.cursor < len(exp.k0):
            heapq.heappush(heap, (exp.k0[exp.cursor], exp.k1[exp.cursor], next(tie), exp))
        if (exp.k0[i], exp.k1[i]) >= best_key:
            continue
        child = exp.child(i)
        if child.k == L:  # complete: add the return link; the key is now the exact cost
            key = _final_key(problem, obj, child, bounds.theta)
            if key < best_key:
                best_key, best_stages = key, _stages_of(child)
            continue
        bucket = labels_at.setdefault((child.k, child.d), [])
        if any(_dominates(obj, other, child) for other in bucket):
            continue
        for other in bucket:
            if _dominates(obj, child, other):
                other.alive = False
        bucket[:] = [o for o in bucket if o.alive]
        bucket.append(child)
        heapq.heappush(heap, (exp.k0[i], exp.k1[i], next(tie), child))
    return _Outcome(best_key, best_stages, True, best_key[0], expansions)


def _tighten(
    problem: Problem, bounds: Bounds, upper: float, started: float, deadline: float
) -> Bounds:
    """Subgradient ascent on Lagrangian penalties (one per device) to raise the latency bound.

    Spends at most LAGRANGE_SHARE of the budget; keeps the penalties with the best bound.
    Returns ``bounds`` with penalised cost-to-go (or unchanged if nothing improved).
    """
    D = problem.n_devices
    stop_at = started + LAGRANGE_SHARE * (deadline - started)
    lam = np.zeros(D)
    best_lb, best = bounds.start_latency, None
    scale = 1.0
    for _ in range(LAGRANGE_ROUNDS):
        if time.perf_counter() > stop_at:
            break
        h, start, uses = penalised_latency(problem, lam)
        lb = start - lam.sum()
        if lb > best_lb + 1e-12:
            best_lb, best = lb, (h, lam.copy())
        grad = uses - 1.0
        grad[(lam <= 0) & (grad < 0)] = 0.0  # projected: penalties stay >= 0
        norm = float(grad @ grad)
        if norm == 0.0 or upper - lb <= 1e-9 * upper:
            break  # the relaxed optimum uses every device at most once: bound is tight
        lam = np.maximum(0.0, lam + scale * (upper - lb) / norm * grad)
        scale *= 0.9
    if best is None:
        return bounds
    h, lam = best
    return replace(bounds, latency=h, start_latency=best_lb, penalty=lam)


def _latency(problem: Problem, deadline: float, incumbents: list[list[Stage]]) -> SearchResult:
    started = time.perf_counter()
    bounds = relaxed_bounds(problem)
    best: tuple[tuple[float, float], list[Stage] | None] = ((np.inf, np.inf), None)
    dived = _dive(problem, bounds, 0, deadline)
    for plan in [*incumbents, *([dived] if dived else [])]:
        key = _key(0, *evaluate(problem, plan))
        if key < best[0]:
            best = (key, list(plan))
    if best[1] is not None and best[0][0] > bounds.start_latency:
        bounds = _tighten(problem, bounds, best[0][0], started, deadline)
    out = _best_first(problem, bounds, 0, deadline, best)
    lower = out.key[0] if out.exhausted else max(out.open_bound, bounds.start_latency)
    return _result("latency", problem, out.stages, out.exhausted, lower, out.expansions, bounds)


def _throughput(problem: Problem, deadline: float, incumbents: list[list[Stage]]) -> SearchResult:
    """Smallest bottleneck θ*, then the fastest plan at θ*.

    The baselines give the first upper bound; the capacity bound (devices cannot cover the
    model with steps below it) the lower one. Then, each while it applies and until θ* is
    proven: the furthest-reach relaxation (subset_dp.furthest_bound: a tight lower bound, and
    often a plan that meets it), the dense DP (subset_dp.solve, small fleets), the branch and
    bound (bottleneck.py). The tie-break: the latency DP at θ*, else A* on steps <= θ*. If
    time runs out, the gap between the bounds is stated.
    """
    started = time.perf_counter()
    base = relaxed_bounds(problem)
    lo = max(base.start_bottleneck, _capacity_bound(problem, base))  # proven lower bound
    hi, plan = np.inf, None
    for p in incumbents:
        bot = evaluate(problem, p)[1]
        if bot < hi:
            hi, plan = bot, list(p)
    proven = not np.isfinite(lo)  # infinite bound: no plan even with devices reusable
    relaxed_proof = dense = False
    if not proven and np.isfinite(hi) and problem.n_devices <= RELAX_MAX_DEVICES:
        # the furthest-reach relaxation (links between devices ignored): a far tighter lower
        # bound than the capacity bound, and its plan is often optimal (then proven here)
        now = time.perf_counter()
        bound, relaxed = furthest_bound(problem, lo, hi, now + RELAX_SHARE * (deadline - now))
        lo = max(lo, bound)
        if relaxed is not None and is_valid(problem, relaxed):
            bot = evaluate(problem, relaxed)[1]
            if bot < hi:
                hi, plan = bot, relaxed
        below = float(np.nextafter(hi, 0.0))
        in_time = time.perf_counter() < deadline
        if plan is not None and in_time and furthest_feasible(problem, below) is None:
            proven = relaxed_proof = True  # nothing, even relaxed, beats the incumbent
            lo = hi
    if not proven and dense_fits(problem):  # small fleet: the exact DP over (set, device, cut)
        share = 1.0 if dense_states(problem) <= SURE_STATES else DP_SHARE
        now = time.perf_counter()
        try:
            found = subset_solve(problem, "bottleneck", hi, now + share * (deadline - now), cap=hi)
            if found is not None:
                hi, plan = evaluate(problem, found[1])[1], found[1]
            proven = dense = True  # None: nothing at or below the incumbent (or no plan at all)
        except Budget:
            pass  # out of its share: the branch and bound takes what is left
    if not proven and plan is not None:
        hi, plan, lo = _bisect(problem, hi, plan, lo, deadline)
    if not proven:
        upper = float(np.nextafter(hi, 0.0)) if np.isfinite(hi) else np.inf
        found_bb, proven = min_bottleneck(problem, upper, deadline, lower=lo)
        if found_bb is not None:
            hi, plan = evaluate(problem, found_bb)[1], found_bb
    expansions = 0
    fastest = False
    stats = {
        "bottleneck_s": time.perf_counter() - started,
        "dense_dp": float(dense),
        "relaxation_proof": float(relaxed_proof),
    }
    if proven and plan is not None and dense_states(problem) <= TIE_DP_STATES:
        # θ* known: the fastest plan at θ* by the DP with + for max (exact)
        now = time.perf_counter()
        share = 1.0 if dense_fits(problem) else DP_SHARE
        try:
            cap = evaluate(problem, plan)[0]
            fast = subset_solve(problem, "latency", hi, now + share * (deadline - now), cap=cap)
            plan, fastest = (fast[1] if fast is not None else plan), True
        except Budget:
            pass
    if proven and plan is not None and not fastest:  # the lowest-latency plan at θ* by A*
        bounds = relaxed_bounds(problem, hi)
        left = deadline - time.perf_counter()
        tie_deadline = time.perf_counter() + max(0.0, TIE_BREAK_SHARE * left)
        incumbent = (_key(0, *evaluate(problem, plan)), plan)
        out = _best_first(problem, bounds, 0, tie_deadline, incumbent)
        expansions = out.expansions
        plan, fastest = out.stages or plan, out.exhausted
    result = _result("throughput", problem, plan, proven, hi if proven else lo, expansions, base)
    result.stats.update(stats, latency_tie_break_proven=float(fastest))
    return result


def _bisect(
    problem: Problem, hi: float, plan: list[Stage], lo: float, deadline: float
) -> tuple[float, list[Stage], float]:
    """Quick feasibility probes halfway between the bounds, each on a short leash: a found
    plan lowers ``hi``, a proof of infeasibility raises ``lo``, a probe that runs out of its
    time only moves the next probe up. Leaves the exact proof to the branch and bound."""
    guess = lo  # below this, probes timed out (not proven)
    for _ in range(BISECT_PROBES):
        if hi - max(lo, guess) <= 0.01 * hi:
            break
        theta = (max(lo, guess) + hi) / 2
        now = time.perf_counter()
        leash = min(deadline, now + BISECT_SHARE * (deadline - now))
        try:
            found = feasible_under(problem, theta, leash)
        except Budget:
            guess = theta
            continue
        if found is None:
            lo = theta
        else:
            hi, plan = evaluate(problem, found)[1], found
    return hi, plan, lo


def _capacity_bound(problem: Problem, base: Bounds, steps: int = 40) -> float:
    """Largest θ (to bisection precision) at which the devices, each taking one stage of at
    most θ ms, provably cannot cover the model: every plan's bottleneck is above it."""
    L = problem.n_slices
    lo, hi = 0.0, float(problem.prefix_ms[:, L].max())
    if not np.isfinite(hi) or not _coverable(base):
        return base.start_bottleneck
    for _ in range(steps):
        mid = (lo + hi) / 2
        if np.minimum(coverage(problem, mid)[:, 0], L).sum() >= L:
            hi = mid
        else:
            lo = mid
    return lo


def _coverable(bounds: Bounds) -> bool:
    """Can all devices together cover every slice at all (under the bounds' theta)?"""
    L = bounds.cover.shape[1] - 1
    return bool(np.minimum(bounds.cover[:, 0], L).sum() >= L)


def _result(
    objective: str,
    problem: Problem,
    stages: list[Stage] | None,
    proven: bool,
    lower: float,
    expansions: int,
    bounds: Bounds,
) -> SearchResult:
    lat, bot = evaluate(problem, stages) if stages else (np.inf, np.inf)
    value = lat if objective == "latency" else bot
    relaxed = bounds.start_latency if objective == "latency" else bounds.start_bottleneck
    return SearchResult(
        objective=objective,
        stages=stages,
        latency_ms=lat,
        bottleneck_ms=bot,
        optimal=proven,
        lower_bound=min(lower, value),
        budget_hit=not proven,
        expansions=expansions,
        wall_s=0.0,
        relaxed_bound=relaxed,
    )


def exact_search(
    problem: Problem,
    objective: str = "latency",
    budget_s: float = 5.0,
    incumbents: list[list[Stage]] | None = None,
) -> SearchResult:
    """Optimal placement under memory, one stage per device and ``problem.max_stages``.

    ``incumbents`` are valid plans known in advance (e.g. the baselines): they prune the search
    and are the fallback answer if the budget runs out before anything better is found.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    started = time.perf_counter()
    deadline = started + budget_s
    solve = _latency if objective == "latency" else _throughput
    result = solve(problem, deadline, list(incumbents or []))
    result.wall_s = time.perf_counter() - started
    return result
