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
k whose range [k, b) fits f's memory and computes in at most θ ms (both only shrink as k
falls). Only steps of at most θ are allowed; a state is dropped when its value exceeds the cap
(the best plan so far) or when the unused devices cannot cover the remaining slices.

Work is about 2^D · D · L · W (W: the longest window), so the throughput search runs this only
while ``dense_fits`` says so and keeps the branch and bound (with its stated gap) above.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from splitter.planning.bottleneck import Budget
from splitter.planning.problem import Problem, Stage

# 2^D · D · (L+1) states at most for the dense DP (200 × 8: 0.4 M; 1000 × 8: 2 M).
MAX_STATES = 4_000_000


def dense_fits(problem: Problem) -> bool:
    """Is the (set, device, cut) state space small enough for the dense DP?"""
    D, L = problem.n_devices, problem.n_slices
    return D <= 20 and (1 << D) * D * (L + 1) <= MAX_STATES


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
    W = int((b[None, :] - lo).max())
    if W <= 0:
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
        value = np.full(A.shape, np.inf)
        step = np.zeros(A.shape, dtype=np.int32)
        for j in range(1, W + 1):  # the last stage is [b - j, b)
            if j % 64 == 0 and time.perf_counter() > deadline:
                raise Budget
            ok = (b[j:] - j)[None, :] >= lop[:, j:]
            if not ok.any():
                continue
            cand = combine(A[:, : L + 1 - j], Pp[:, j:] - Pp[:, : L + 1 - j])
            better = ok & (cand < value[:, j:])
            np.copyto(value[:, j:], cand, where=better)
            np.copyto(step[:, j:], j, where=better)
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
