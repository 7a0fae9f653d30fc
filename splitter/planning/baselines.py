"""Simple plans from the same profile, to show what the optimiser buys (and as incumbents)."""

from __future__ import annotations

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
    """Best split of the model in two contiguous parts on two distinct devices (exhaustive)."""
    L, D = problem.n_slices, problem.n_devices
    if problem.max_stages < 2:
        return None
    plans = [
        [(d, 0, k), (e, k, L)]
        for d in range(D)
        for k in range(1, int(problem.reach[d, 0]) + 1)
        if k < L
        for e in range(D)
        if e != d and problem.fits(e, k, L)
    ]
    return _best(problem, plans, objective)


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
