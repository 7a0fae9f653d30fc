"""Cost-to-go lower bounds from the relaxation that lets a device run several stages.

Only two consecutive stages on the same device are excluded; "each device at most once" and
the stage limit are dropped. So these bounds never exceed the true cost of finishing a plan:
the exact search uses them as its (consistent) heuristic, and their value at the start is
the proven lower bound quoted when a search budget runs out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitter.planning.problem import Problem


@dataclass
class Bounds:
    """``latency[k, d]`` / ``bottleneck[k, d]``: best cost from "cut k produced on device d" to
    the controller (k == L: only the return link)."""

    latency: np.ndarray  # (L+1, D)
    bottleneck: np.ndarray  # (L+1, D)
    start_latency: float  # lower bound on any plan's latency
    start_bottleneck: float  # lower bound on any plan's bottleneck
    min_stages: np.ndarray  # (L+1,): fewest stages that can cover slices [k, L) (0 at L)
    cover: np.ndarray  # (D, L+1): longest range starting at >= k that device d can run
    theta: float = np.inf  # only links and stages taking <= theta ms were allowed
    penalty: np.ndarray | None = None  # Lagrangian penalties folded into ``latency`` (D,)


def relaxed_bounds(problem: Problem, theta: float = np.inf) -> Bounds:
    """Backward DP over cuts, vectorised over (device, stop): O(L² D + L D²).

    With ``theta``, only links and stage computes of at most ``theta`` ms are allowed (the
    throughput search asks "is there a plan whose slowest step is <= theta?").
    """
    L, D = problem.n_slices, problem.n_devices
    P, reach = problem.prefix_ms, problem.reach
    T = np.where(problem.transfer <= theta, problem.transfer, np.inf)
    t_in = np.where(problem.transfer_in <= theta, problem.transfer_in, np.inf)
    t_out = np.where(problem.transfer_out <= theta, problem.transfer_out, np.inf)
    lat = np.full((L + 1, D), np.inf)
    bot = np.full((L + 1, D), np.inf)
    lat[L] = t_out
    bot[L] = t_out
    min_stages = np.full(L + 1, np.inf)
    min_stages[L] = 0
    stops = np.arange(L + 1)
    arrive_lat = arrive_bot = np.full(D, np.inf)
    for k in range(L - 1, -1, -1):
        comp = P[:, k + 1 :] - P[:, k : k + 1]  # (D, L-k): compute of [k, b) for b = k+1..L
        valid = (stops[None, k + 1 :] <= reach[:, k : k + 1]) & (comp <= theta)
        min_stages[k] = 1 + np.where(valid.any(axis=0), min_stages[k + 1 :], np.inf).min()
        go_lat = np.where(valid, comp + lat[k + 1 :].T, np.inf)
        go_bot = np.where(valid, np.maximum(comp, bot[k + 1 :].T), np.inf)
        arrive_lat = go_lat.min(axis=1)  # (D,): cut k available on e, best to finish
        arrive_bot = go_bot.min(axis=1)
        lat[k] = (T[:, :, k] + arrive_lat[None, :]).min(axis=1)  # inf on d == e excludes reuse
        bot[k] = np.maximum(T[:, :, k], arrive_bot[None, :]).min(axis=1)
    start_lat = float((t_in + arrive_lat).min())
    start_bot = float(np.maximum(t_in, arrive_bot).min())
    return Bounds(lat, bot, start_lat, start_bot, min_stages, coverage(problem, theta), theta)


def coverage(problem: Problem, theta: float = np.inf) -> np.ndarray:
    """cover[d, k]: the most slices device d can take in one stage starting at or after cut k.

    The devices still unused must together cover what is left, so a partial plan at cut k with
    unused set U is hopeless when sum over U of cover[., k] < L - k (exact pruning).
    """
    L, D = problem.n_slices, problem.n_devices
    reach = problem.reach.astype(float)
    if np.isfinite(theta):  # a stage may also take no more than theta ms
        for d in range(D):
            limit = np.searchsorted(problem.prefix_ms[d], problem.prefix_ms[d, :L] + theta, "right")
            reach[d] = np.minimum(reach[d], limit - 1)
    length = reach - np.arange(L)[None, :]
    cover = np.zeros((D, L + 1))
    cover[:, :L] = np.maximum.accumulate(length[:, ::-1], axis=1)[:, ::-1]
    return cover


def penalised_latency(
    problem: Problem, penalty: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray]:
    """The latency relaxation with ``penalty[d]`` ms added to every stage on device d.

    Lagrangian bound for "each device at most once": for any valid completion c from a state
    whose unused devices are U, cost(c) >= h(state) - sum of penalty over U, for any penalty
    >= 0; so h - sum(penalty) is a lower bound on every plan, and penalties that discourage
    the devices the relaxation reuses make it tighter. Returns (h, start, uses): the penalised
    cost-to-go (L+1, D), the penalised start value, and how often the relaxed optimum uses
    each device (the subgradient is uses - 1).
    """
    L, D = problem.n_slices, problem.n_devices
    P, reach, T = problem.prefix_ms, problem.reach, problem.transfer
    lat = np.full((L + 1, D), np.inf)
    lat[L] = problem.transfer_out
    arrive = np.full((L, D), np.inf)
    arrive_stop = np.zeros((L, D), dtype=int)
    stops = np.arange(L + 1)
    for k in range(L - 1, -1, -1):
        comp = P[:, k + 1 :] - P[:, k : k + 1] + penalty[:, None]
        go = np.where(stops[None, k + 1 :] <= reach[:, k : k + 1], comp + lat[k + 1 :].T, np.inf)
        best = go.argmin(axis=1)
        arrive[k] = go[np.arange(D), best]
        arrive_stop[k] = best + k + 1
        lat[k] = (T[:, :, k] + arrive[k][None, :]).min(axis=1)
    first = problem.transfer_in + arrive[0]
    start = float(first.min())
    uses = np.zeros(D)
    if np.isfinite(start):  # walk the relaxed optimum forward to count device uses
        e, k = int(first.argmin()), 0
        while True:
            uses[e] += 1
            k = int(arrive_stop[k, e])
            if k >= L:
                break
            e = int((T[e, :, k] + arrive[k]).argmin())
    return lat, start, uses
