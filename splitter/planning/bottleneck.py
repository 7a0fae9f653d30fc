"""Is there a valid plan whose every link and stage takes at most θ ms? (exact, fast)

The throughput search asks this for a sequence of θ. Latency does not matter here, so a
partial plan is only its state ``(k, d, used)``: cut k produced on device d, devices ``used``.
A state is never explored twice, nor when a state at the same (k, d) with a subset of its
devices was explored already (it succeeded, or this one fails too). Children are tried
furthest-reaching first (depth-first), and a state is pruned when the unused devices cannot
cover the remaining slices even in their best places.
"""

from __future__ import annotations

import time

import numpy as np

from splitter.planning.problem import Problem, Stage
from splitter.planning.relaxation import coverage


class Budget(Exception):
    """The deadline passed before the question was settled."""


def feasible_under(problem: Problem, theta: float, deadline: float) -> list[Stage] | None:
    """A valid plan with every step <= ``theta``, or None if provably none exists.

    Raises :class:`Budget` when ``deadline`` (``time.perf_counter()``) passes first.
    """
    best, _ = min_bottleneck(problem, theta, deadline, first_only=True)
    return best


def min_bottleneck(
    problem: Problem,
    theta: float,
    deadline: float,
    lower: float = 0.0,
    first_only: bool = False,
) -> tuple[list[Stage] | None, bool]:
    """Branch and bound: the valid plan with the smallest bottleneck <= ``theta``.

    Each plan found tightens θ to just below its bottleneck and the same depth-first search
    goes on (states that failed under a larger θ fail under a smaller one too, so nothing is
    explored twice). Returns (best plan or None, proven); proven is False only when the
    deadline passed first. Stops early at a plan whose bottleneck reaches ``lower``.
    """
    L, D = problem.n_slices, problem.n_devices
    P = problem.prefix_ms
    arrays: dict[str, np.ndarray] = {}

    def restrict(theta: float) -> None:
        """What steps of at most ``theta`` allow: reach, cover, fast-enough links."""
        reach = problem.reach.copy()
        for d in range(D):  # a stage may also take no more than theta ms
            most = np.searchsorted(P[d], P[d, :L] + theta, "right") - 1
            reach[d] = np.minimum(reach[d], most)
        arrays["reach"] = reach
        arrays["reach_pad"] = np.concatenate([reach, np.full((D, 1), L)], axis=1)  # (D, L+1)
        arrays["cover"] = np.minimum(coverage(problem, theta), L)  # (D, L+1), 0 at L
        arrays["link_ok"] = problem.transfer <= theta  # (D, D, L+1)
        arrays["in_ok"] = problem.transfer_in <= theta
        arrays["out_ok"] = problem.transfer_out <= theta

    restrict(theta)
    seen: dict[tuple[int, int], list[int]] = {}
    calls = 0
    best: list[Stage] | None = None
    limit = theta  # current θ: only steps <= limit are allowed

    def children(k: int, d: int, mask: int) -> tuple[np.ndarray, np.ndarray]:
        """(devices, stops) worth trying from state (k, d, mask), furthest stop first."""
        free = np.array([e for e in range(D) if not (mask >> e) & 1], dtype=int)
        if free.size == 0:
            return free, free
        reach, cover, link_ok = arrays["reach"], arrays["cover"], arrays["link_ok"]
        ok_in = arrays["in_ok"][free] if d < 0 else link_ok[d, free, k]
        far = int(reach[free, k].max())
        if far <= k:
            return free[:0], free[:0]
        stops = np.arange(k + 1, far + 1)  # no free device reaches beyond `far`
        valid = ok_in[:, None] & (stops[None, :] <= reach[free, k][:, None])  # (m, n)
        # after e stops at b, the other free devices must cover [b, L) (cover: upper bound)
        rest = cover[free][:, stops]  # (m, n)
        others = rest.sum(axis=0)[None, :] - rest
        at_end = stops[None, :] == L
        valid &= np.where(at_end, arrays["out_ok"][free][:, None], others >= (L - stops)[None, :])
        rows, cols = np.nonzero(valid)
        # ... and one of them must be reachable over a fast-enough link at b and run there
        b = stops[cols]
        inner = b < L
        if inner.any():
            ri, bi = rows[inner], b[inner]
            runs = arrays["reach_pad"][free][:, bi] > bi[None, :]  # (m, pairs): f starts at b
            fast = link_ok[free[ri][:, None], free[None, :], bi[:, None]]  # (pairs, m)
            keep = np.ones(rows.size, dtype=bool)
            keep[inner] = (fast & runs.T).any(axis=1)
            rows, cols = rows[keep], cols[keep]
        order = np.argsort(-cols, kind="stable")
        return free[rows[order]], cols[order] + k + 1

    class _Done(Exception):
        pass

    def step_cost(d: int, e: int, k: int, b: int) -> float:
        link = problem.transfer_in[e] if d < 0 else problem.transfer[d, e, k]
        cost = max(float(link), float(P[e, b] - P[e, k]))
        return max(cost, float(problem.transfer_out[e])) if b == L else cost

    def explore(k: int, d: int, mask: int, used: int, path: list[Stage], pmax: float) -> bool:
        """Search below state (k, d, mask); False when cut short because the path leading
        here became too slow after a better plan was found (then nothing is learnt)."""
        nonlocal calls, best, limit
        calls += 1
        if calls % 256 == 0 and time.perf_counter() > deadline:
            raise Budget
        if used >= problem.max_stages:
            return True
        devices, stops = children(k, d, mask)
        for e, b in zip(devices.tolist(), stops.tolist(), strict=True):
            if pmax > limit:  # a better plan was found meanwhile: this prefix is too slow now
                return False
            cost = step_cost(d, e, k, b)
            if cost > limit:  # θ may have tightened since the children were listed
                continue
            if b == L:
                best = [*path, (e, k, b)]
                value = max(pmax, cost)
                if first_only or value <= lower:
                    raise _Done
                limit = float(np.nextafter(value, 0.0))
                restrict(limit)  # sharper pruning below this state from now on
                continue
            new_mask = mask | (1 << e)
            masks = seen.setdefault((b, e), [])
            if any(m & ~new_mask == 0 for m in masks):
                continue
            masks.append(new_mask)
            if not explore(b, e, new_mask, used + 1, [*path, (e, k, b)], max(pmax, cost)):
                masks.remove(new_mask)  # not fully searched: do not let it prune others
        return pmax <= limit

    try:
        explore(0, -1, 0, 0, [], 0.0)
    except _Done:
        pass
    except Budget:
        if first_only:
            raise
        return best, False
    return best, True
