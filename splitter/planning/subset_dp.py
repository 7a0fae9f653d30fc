"""Exact dynamic programme over (used-device set, last device, cut), vectorised with numpy.

A state ``(S, f, b)``: the stages so far used exactly the devices ``S``, the last one ran on
``f`` and produced cut ``b``. Every path in this state space is a valid plan prefix (no device
twice, ``|S|`` stages), so a plain DP is exact — the A → B → A path of the layered DAG cannot
appear. Layer ``l`` holds the sets of size ``l``; each state has one predecessor set
``S \\ {f}``, so a layer is computed in one pass from the previous one:

    arrive(S, f, k) = min over e in S of  value(S, e, k) ⊕ link(e → f at cut k)
    value(S ∪ {f}, f, b) = min over k in window(f, b) of  arrive(S, f, k) ⊕ compute_f(k, b)

with ⊕ = max for the bottleneck and + for the latency, summed in path order like
``problem.evaluate`` (so values are bit-equal to it). ``window(f, b)`` is the interval of starts
k whose range [k, b) fits f's memory and computes in at most θ ms (memory and compute only
grow as k falls). Only steps of at most θ are allowed; a state is dropped when its value
exceeds the cap (the best plan so far) or when the unused devices cannot cover the rest.

Work is about 2^D · D · L · log L, so the throughput search runs this only while
``dense_fits`` says so and keeps the branch and bound (with its stated gap) above. For any
fleet up to RELAX_MAX_DEVICES, ``furthest_bound`` bisects θ on a relaxation that ignores the
links between devices (2^D · D per θ): a tight lower bound, and often the optimal plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from splitter.planning.bottleneck import Budget
from splitter.planning.problem import Problem, Stage

# The dense DP is used while its 2^D · D · (L+1) states are at most MAX_STATES (200 × 8:
# 0.4 M; 200 × 11, 1000 × 9: 4.6 M). Above SURE_STATES it gets only DP_SHARE of the budget,
# the branch and bound the rest if it runs out.
MAX_STATES = 6_000_000
SURE_STATES = 2_500_000
DP_SHARE = 0.6
# The furthest-reach relaxation (2^D · D per θ) runs for fleets of up to this many devices.
RELAX_MAX_DEVICES = 20


def dense_states(problem: Problem) -> int:
    """Size of the (set, device, cut) state space."""
    D, L = problem.n_devices, problem.n_slices
    return (1 << min(D, 40)) * D * (L + 1)


def dense_fits(problem: Problem) -> bool:
    """Is the (set, device, cut) state space small enough for the dense DP?"""
    return problem.n_devices <= 30 and dense_states(problem) <= MAX_STATES


def windows(problem: Problem, theta: float) -> np.ndarray:
    """lo[f, b]: the first start k for which [k, b) fits f's memory and computes in <= theta
    ms; every k in [lo, b) qualifies, none below. lo == b: no stage on f ends at b."""
    L, D = problem.n_slices, problem.n_devices
    P = problem.prefix_ms
    b = np.arange(L + 1)
    # memory: reach[f, k] >= b holds for a suffix of k (reach only grows with k)
    mem = np.stack([np.searchsorted(problem.reach[f], b, "left") for f in range(D)])
    # compute: P[f, b] - P[f, k] <= theta holds for a suffix of k; bisect with the exact test
    lo = np.zeros((D, L + 1), dtype=np.int64)
    hi = np.broadcast_to(b, (D, L + 1)).copy()
    while (lo < hi).any():
        mid = (lo + hi) // 2
        ok = (P - np.take_along_axis(P, mid, axis=1)) <= theta
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid + 1)
    start = np.maximum(mem, lo)
    return np.minimum(start, b[None, :])


def cover_of(lo: np.ndarray) -> np.ndarray:
    """cover[g, k]: the most slices g can take in one stage starting at or after cut k."""
    D, n = lo.shape
    a = np.arange(n)
    # [a, b) runs on g iff lo[g, b] <= a < b; lo only grows with b, so the furthest such b
    # is the last index whose lo is <= a
    far = np.stack([np.searchsorted(lo[g], a, "right") - 1 for g in range(D)])
    length = np.maximum(far - a[None, :], 0).astype(float)
    return np.maximum.accumulate(length[:, ::-1], axis=1)[:, ::-1]


class _RangeMin:
    """Sparse table over the last axis of X (p, n): min and argmin of X[r, x..y] in O(1)."""

    def __init__(self, X: np.ndarray) -> None:
        p, n = X.shape
        vals, idxs = [X], [np.broadcast_to(np.arange(n), (p, n))]
        half = 1
        while 2 * half <= n:
            v, i = vals[-1], idxs[-1]
            nv, ni = v.copy(), i.copy()
            right_better = v[:, half:] < v[:, :-half]
            nv[:, :-half] = np.where(right_better, v[:, half:], v[:, :-half])
            ni[:, :-half] = np.where(right_better, i[:, half:], i[:, :-half])
            vals.append(nv)
            idxs.append(ni)
            half *= 2
        self.vals = np.stack(vals).reshape(-1)
        self.idxs = np.stack(idxs).reshape(-1)
        self.p, self.n = p, n
        self.log = np.zeros(n + 1, dtype=np.int64)
        self.log[2:] = np.floor(np.log2(np.arange(2, n + 1))).astype(np.int64)

    def query(self, r: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(min, argmin) of X[r[i], x[i] .. y[i]] for every i; needs x <= y."""
        t = self.log[y - x + 1]
        base = (t * self.p + r) * self.n
        left, right = base + x, base + y - (1 << t) + 1
        lv, rv = self.vals[left], self.vals[right]
        take_right = rv < lv
        return np.where(take_right, rv, lv), np.where(take_right, self.idxs[right], self.idxs[left])


# pairs per block in ``last_stage`` (its tables take ~log2(L) copies of the block)
CHUNK = 512


def last_stage(
    A: np.ndarray, Pp: np.ndarray, lop: np.ndarray, bottleneck: bool, deadline: float
) -> tuple[np.ndarray, np.ndarray]:
    """For each row r (a (set, device f) pair) and stop b: the best last stage [k, b) on f,
    k in the window [lop[r, b], b). Returns (value, b - k); value inf where there is none.

    Bottleneck: min over k of max(A[k], c(k)) with c(k) = P[b] - P[k] falling in k. With
    m(x) = min A[x..b-1] (rising in x), that equals min over x of max(m(x), c(x)): bisect for
    the first x where m(x) >= c(x); the optimum is there or just before. Latency: the k with
    the least A[k] - P[k], summed again in path order. Range minima: a sparse table.
    """
    p, n = A.shape
    value = np.full((p, n), np.inf)
    step = np.zeros((p, n), dtype=np.int64)
    if p == 0:
        return value, step
    if time.perf_counter() > deadline:
        raise Budget
    rmq = _RangeMin(A if bottleneck else A - Pp)
    r, b = np.nonzero(lop < np.arange(n)[None, :])  # non-empty windows [lo, b - 1]
    lo, last = lop[r, b], b - 1
    m, k = rmq.query(r, lo, last)
    live = np.isfinite(m)  # some arrival in the window
    r, b, lo, last, k = r[live], b[live], lo[live], last[live], k[live]
    Pb = Pp[r, b]
    if bottleneck:
        left, right = lo.copy(), b.copy()  # first x with m(x) >= c(x), or b
        while (left < right).any():
            mid = (left + right) // 2
            x = np.minimum(mid, last)
            ok = rmq.query(r, x, last)[0] >= Pb - Pp[r, mid]
            right = np.where(ok, mid, right)
            left = np.where(ok, left, mid + 1)
        first = np.minimum(left, last)
        at_first = np.where(left < b, rmq.query(r, first, last)[0], np.inf)
        before = np.maximum(left - 1, 0)
        at_before = np.where(left > lo, Pb - Pp[r, before], np.inf)
        x = np.where(at_first <= at_before, first, before)
        k = rmq.query(r, x, last)[1]
    a_k, c_k = A[r, k], Pb - Pp[r, k]
    value[r, b] = np.maximum(a_k, c_k) if bottleneck else a_k + c_k
    step[r, b] = b - k
    return value, step


@dataclass
class _Layer:
    masks: np.ndarray  # (n,) source sets of size l, sorted
    came: np.ndarray  # (n, D, L+1) int: device the cut arrived from (-1: controller)
    pair_s: np.ndarray  # (p,) source set index of each (set, device) pair
    pair_f: np.ndarray  # (p,) device added
    pair_of: np.ndarray  # (n, D) pair index, -1 where none
    step: np.ndarray  # (p, L+1): b - k of the best last stage ending at b


def solve(
    problem: Problem,
    objective: str,
    theta: float,
    deadline: float,
    cap: float = np.inf,
) -> tuple[float, list[Stage]] | None:
    """Best plan with every step <= ``theta``: ``objective`` "bottleneck" (smallest slowest
    step) or "latency" (smallest sum). Values above ``cap`` are pruned (None if nothing is
    within it). Raises :class:`Budget` when ``deadline`` passes first."""
    L, D, M = problem.n_slices, problem.n_devices, problem.max_stages
    if time.perf_counter() > deadline:
        raise Budget
    bottleneck = objective == "bottleneck"
    combine = np.maximum if bottleneck else np.add
    P = problem.prefix_ms
    lo = windows(problem, theta)
    b = np.arange(L + 1)
    if int((b[None, :] - lo).max()) <= 0:
        return None
    link = np.where(problem.transfer <= theta, problem.transfer, np.inf)  # (D, D, L+1)
    t_in = np.where(problem.transfer_in <= theta, problem.transfer_in, np.inf)
    t_out = np.where(problem.transfer_out <= theta, problem.transfer_out, np.inf)
    rest = L - b
    cover = np.minimum(cover_of(lo), rest[None, :])  # (D, L+1)
    bits = 1 << np.arange(D, dtype=np.int64)

    masks = np.zeros(1, dtype=np.int64)
    arrive = np.full((1, D, L + 1), np.inf)
    arrive[0, :, 0] = t_in
    came = np.full((1, D, L + 1), -1, dtype=np.int8)
    layers: list[_Layer] = []
    best, best_at = cap, None
    for level in range(M):
        if time.perf_counter() > deadline:
            raise Budget
        n = masks.size
        ps, pf = np.nonzero(np.isfinite(arrive).any(axis=2))
        if ps.size == 0:
            break
        A, Pp, lop = arrive[ps, pf], P[pf], lo[pf]  # (p, L+1)
        value = np.empty(A.shape)
        step = np.empty(A.shape, dtype=np.int64)
        for c0 in range(0, ps.size, CHUNK):  # bounded memory for the range-min tables
            c1 = c0 + CHUNK
            value[c0:c1], step[c0:c1] = last_stage(
                A[c0:c1], Pp[c0:c1], lop[c0:c1], bottleneck, deadline
            )
        value[value > best] = np.inf
        pair_of = np.full((n, D), -1, dtype=np.int64)
        pair_of[ps, pf] = np.arange(ps.size)
        layers.append(_Layer(masks, came, ps, pf, pair_of, step))
        done = combine(value[:, L], t_out[pf])  # complete plans: the return link
        i = int(done.argmin())
        if np.isfinite(done[i]) and (done[i] < best or (best_at is None and done[i] <= best)):
            best, best_at = float(done[i]), (level, i)
        if level + 1 == M:
            break
        new = masks[ps] | bits[pf]
        unused = ((new[:, None] & bits[None, :]) == 0).astype(float)  # (p, D)
        room = unused @ cover  # (p, L+1): what the unused devices can still cover
        value[:, :L][room[:, :L] < rest[None, :L]] = np.inf
        value[:, L] = np.inf
        value[value > best] = np.inf
        live = np.isfinite(value).any(axis=1)
        if not live.any():
            break
        new, value, pf_live = new[live], value[live], pf[live]
        masks, inv = np.unique(new, return_inverse=True)
        V = np.full((masks.size, D, L + 1), np.inf)
        V[inv, pf_live] = value
        arrive = np.full((masks.size, D, L + 1), np.inf)
        came = np.full((masks.size, D, L + 1), -1, dtype=np.int8)
        for f in range(D):
            vf = V[:, f]
            has = np.isfinite(vf).any(axis=1)
            if not has.any():
                continue
            cand = combine(vf[has][:, None, :], link[f][None, :, :])  # (h, D, L+1)
            sub = arrive[has]
            better = cand < sub
            np.copyto(sub, cand, where=better)
            arrive[has] = sub
            csub = came[has]
            csub[better] = f
            came[has] = csub
        used = (masks[:, None] & bits[None, :]) != 0
        arrive[used] = np.inf
    if best_at is None:
        return None
    return best, _backtrack(layers, best_at, L)


def _backtrack(layers: list[_Layer], at: tuple[int, int], L: int) -> list[Stage]:
    level, p = at
    stop = L
    stages: list[Stage] = []
    while True:
        layer = layers[level]
        f, s = int(layer.pair_f[p]), int(layer.pair_s[p])
        start = stop - int(layer.step[p, stop])
        stages.append((f, start, stop))
        e = int(layer.came[s, f, start])
        if e < 0:
            return stages[::-1]
        prev = layers[level - 1]
        s_prev = int(np.searchsorted(prev.masks, int(layer.masks[s]) ^ (1 << e)))
        p = int(prev.pair_of[s_prev, e])
        stop, level = start, level - 1


def furthest_feasible(problem: Problem, theta: float) -> list[Stage] | None:
    """Relaxation (links between devices ignored, the controller's kept): can the devices,
    each once, reach the last cut with every stage computing in <= theta ms?

    Without those links a partial plan is best when it reached furthest, so one number per
    device set suffices: G[S] = the furthest cut S reaches, G[S] = max over e in S of
    far_e(G[S \\ {e}]) (2^D · D work). None proves every plan's bottleneck is above theta;
    otherwise the relaxed plan (valid except perhaps for its links) is returned.
    """
    L, D, M = problem.n_slices, problem.n_devices, problem.max_stages
    lo = windows(problem, theta)
    a = np.arange(L + 1)
    far = np.stack([np.searchsorted(lo[g], a, "right") - 1 for g in range(D)])
    ext = np.empty((D, L + 2), dtype=np.int64)  # index k + 1; k = -1: nothing run yet
    ext[:, 1:] = np.maximum(far, a[None, :])  # a device may also add nothing
    ext[:, 0] = np.where((problem.transfer_in <= theta) & (far[:, 0] > 0), far[:, 0], -1)
    out_ok = problem.transfer_out <= theta
    sets = np.arange(1 << D, dtype=np.int64)
    size = np.zeros(1 << D, dtype=np.int64)
    for e in range(D):
        size += (sets >> e) & 1
    G = np.full(1 << D, -1, dtype=np.int64)
    arg = np.full(1 << D, -1, dtype=np.int64)
    for s in range(1, M + 1):
        masks = sets[size == s]
        best = np.full(masks.size, -1, dtype=np.int64)
        who = np.full(masks.size, -1, dtype=np.int64)
        for e in range(D):
            has = ((masks >> e) & 1).astype(bool)
            val = ext[e, G[masks[has] ^ (1 << e)] + 1]
            if out_ok[e] and (val == L).any():
                S = int(masks[has][int(np.argmax(val == L))])
                return _relaxed_plan(G, arg, S, e, L)
            better = val > best[has]
            best[has] = np.where(better, val, best[has])
            who[has] = np.where(better, e, who[has])
        G[masks], arg[masks] = best, who
    return None


def _relaxed_plan(G: np.ndarray, arg: np.ndarray, S: int, e: int, stop: int) -> list[Stage]:
    stages: list[Stage] = []
    while e >= 0:
        S ^= 1 << e
        start = max(int(G[S]), 0)
        if start < stop:
            stages.append((e, start, stop))
        stop, e = start, int(arg[S]) if S else -1
    return stages[::-1]


def furthest_bound(
    problem: Problem, lo: float, hi: float, deadline: float
) -> tuple[float, list[Stage] | None]:
    """Bisection on θ in [lo, hi) (to 1e-9 relative) with ``furthest_feasible``: the largest θ
    proven infeasible (a lower bound on every plan's bottleneck) and the relaxed plan at the
    smallest feasible θ tried. Stops at the deadline with what it has."""
    witness = None
    if not np.isfinite(hi) or problem.n_devices > RELAX_MAX_DEVICES:
        return lo, witness
    while hi - lo > 1e-9 * hi and time.perf_counter() < deadline:
        mid = (lo + hi) / 2
        found = furthest_feasible(problem, mid)
        if found is not None:
            hi, witness = mid, found
        else:
            lo = mid
    return lo, witness
