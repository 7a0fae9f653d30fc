"""Simple plans from the same profile, to show what the optimiser buys (and as incumbents)."""

from __future__ import annotations

import numpy as np

from splitter.planning.problem import Problem, Stage, evaluate, is_valid


def best_single_device(problem: Problem, objective: str) -> list[Stage] | None:
    """The whole model on the one device that does it best (None: fits on no device)."""
    L = problem.n_slices
    plans = [[(d, 0, L)] for d in range(problem.n_devices) if problem.fits(d, 0, L)]
    return _best(problem, plans, objective)


def even_split(problem: Problem) -> list[Stage] | None:
    """Equal slice counts on every device, in profile order (None: a part does not fit)."""
    L, D = problem.n_slices, min(problem.n_devices, problem.n_slices, problem.max_stages)
    bounds = [round(i * L / D) for i in range(D + 1)]
    plan = [(i, bounds[i], bounds[i + 1]) for i in range(D)]
    return plan if is_valid(problem, plan) else None


def best_two_devices(problem: Problem, objective: str) -> list[Stage] | None:
    """Best split of the model in two contiguous parts on two distinct devices (exhaustive,
    vectorised over device pairs and cut positions)."""
    L, D = problem.n_slices, problem.n_devices
    if problem.max_stages < 2 or L < 2 or D < 2:
        return None
    k = np.arange(1, L)  # the cut between the two parts
    P = problem.prefix_ms
    first = P[:, k] - P[:, :1]  # (D, L-1): compute of [0, k) on d
    second = P[:, L : L + 1] - P[:, k]  # (D, L-1): compute of [k, L) on e
    ok = (k[None, :] <= problem.reach[:, :1])[:, None, :] & (problem.reach[:, k] == L)[None, :, :]
    link = problem.transfer[:, :, k]  # (D, D, L-1), inf on d == e
    t_in = problem.transfer_in[:, None, None]
    t_out = problem.transfer_out[None, :, None]
    lat = (((t_in + first[:, None, :]) + link) + second[None, :, :]) + t_out
    bot = np.maximum(np.maximum(t_in, first[:, None, :]), link)
    bot = np.maximum(bot, np.maximum(second[None, :, :], t_out))
    primary, secondary = (lat, bot) if objective == "latency" else (bot, lat)
    primary = np.where(ok & np.isfinite(link), primary, np.inf)
    if not np.isfinite(primary).any():
        return None
    best = primary.min()
    tied = np.where(primary == best, secondary, np.inf)
    d, e, i = np.unravel_index(int(tied.argmin()), tied.shape)
    return [(int(d), 0, int(k[i])), (int(e), int(k[i]), L)]


def _best(problem: Problem, plans: list[list[Stage]], objective: str) -> list[Stage] | None:
    index = 0 if objective == "latency" else 1

    def key(plan: list[Stage]) -> tuple[float, float]:
        lat, bot = evaluate(problem, plan)
        return (lat, bot) if index == 0 else (bot, lat)

    return min(plans, key=key) if plans else None


def baselines(problem: Problem, objective: str) -> dict[str, list[Stage] | None]:
    """Named baseline plans (None where that baseline cannot be placed)."""
    return {
        "best single device": best_single_device(problem, objective),
        "even split, all devices": even_split(problem),
        "best two-device split": best_two_devices(problem, objective),
    }
