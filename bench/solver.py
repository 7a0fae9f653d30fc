"""Benchmark the placement solver on synthetic profiles (no devices needed).

    .venv/bin/python bench/solver.py [--budget 5] [--quick]

Prints wall time per (layers × devices × objective) with growth ratios side by side, checks
the optimum against brute force on small random profiles, counts how often the exact search
hit its time budget on random profiles, and ends with one `bench:` line per target.
Wall time = what `configure` spends planning: arrays + baselines + exact search.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from splitter.planning.baselines import baselines
from splitter.planning.brute_force import brute_force
from splitter.planning.graph import reference_solve
from splitter.planning.problem import build_problem
from splitter.planning.search import SearchResult, exact_search
from splitter.profile import profile_from_dict
from splitter.synthetic import make_synthetic_profile

TOL = 1e-9


def plan_once(
    layers: int, devices: int, objective: str, budget: float, seed: int = 0, memory: str = "roomy"
) -> tuple[float, SearchResult]:
    profile = profile_from_dict(make_synthetic_profile(layers, devices, seed=seed, memory=memory))
    start = time.perf_counter()
    problem = build_problem(profile, 8)
    incumbents = [p for p in baselines(problem, objective).values() if p]
    result = exact_search(problem, objective, budget, incumbents)
    return time.perf_counter() - start, result


def fmt(wall: float, result: SearchResult) -> str:
    if result.optimal:
        return f"{wall:7.2f} s opt"
    rel = result.gap / result.objective_value * 100 if result.stages else float("inf")
    return f"{wall:7.2f} s gap {rel:.2f}%"


def grid(budget: float, sizes: list[int], fleet: list[int]) -> dict:
    print(f"\n## wall time (batch 8, roomy memory, budget {budget:g} s); ratio = vs previous size")
    head = f"{'latency':>20} {'ratio':>6} | {'throughput':>20} {'ratio':>6}"
    print(f"{'layers':>6} {'devs':>4} | {head}")
    out: dict = {}
    for d in fleet:
        prev: dict[str, float] = {}
        for n in sizes:
            cells = []
            for objective in ("latency", "throughput"):
                wall, result = plan_once(n, d, objective, budget)
                out[(n, d, objective)] = (wall, result)
                ratio = f"{wall / prev[objective]:6.1f}" if objective in prev else "     -"
                prev[objective] = wall
                cells.append(f"{fmt(wall, result):>20} {ratio}")
            print(f"{n:>6} {d:>4} | {cells[0]} | {cells[1]}")
    return out


def methods(budget: float) -> None:
    """The three exact methods side by side on sizes the slow ones can still do."""
    print("\n## exact methods compared (median of 5 seeds, tight memory, both objectives)")
    print(f"{'size':>6} {'objective':>10} | {'brute force':>11} {'networkx':>9} {'search':>9} | "
          f"{'nx/search':>9}")  # fmt: skip
    for n, d in ((6, 3), (8, 4), (10, 4)):
        for objective in ("latency", "throughput"):
            times: dict[str, list[float]] = {"brute": [], "nx": [], "search": []}
            for seed in range(5):
                data = make_synthetic_profile(n, d, seed=seed, memory="tight", link_scale=30.0)
                profile = profile_from_dict(data)
                problem = build_problem(profile, 8)
                t = time.perf_counter()
                brute_force(profile, 8, problem.devices, problem.max_stages, 0.2)
                times["brute"].append(time.perf_counter() - t)
                t = time.perf_counter()
                reference_solve(problem, objective)
                times["nx"].append(time.perf_counter() - t)
                t = time.perf_counter()
                exact_search(problem, objective, budget)
                times["search"].append(time.perf_counter() - t)
            med = {k: float(np.median(v)) for k, v in times.items()}
            print(
                f"{n:>3}x{d:<2} {objective:>10} | {med['brute']:10.3f}s {med['nx']:8.3f}s "
                f"{med['search']:8.3f}s | {med['nx'] / med['search']:9.1f}"
            )


def targets_200x8(budget: float, seeds: int) -> dict[str, float]:
    """Worst wall time over several random 200 × 8 profiles, both memory regimes."""
    worst = {"latency": 0.0, "throughput": 0.0}
    print(f"\n## 200 layers × 8 devices, {seeds} seeds × roomy/tight")
    for objective in worst:
        walls, opt = [], 0
        for seed in range(seeds):
            for memory in ("roomy", "tight"):
                wall, result = plan_once(200, 8, objective, budget, seed, memory)
                walls.append(wall)
                opt += result.optimal
        worst[objective] = max(walls)
        print(
            f"{objective:>10}: median {np.median(walls):.2f} s, worst {max(walls):.2f} s, "
            f"proven optimal {opt}/{len(walls)}"
        )
    return worst


def fleet_reach(budget: float, fleet: list[int]) -> int:
    """Throughput at 200 layers (tight memory, seed 0) as the fleet grows: which method proved
    θ* (the furthest-reach relaxation, the dense DP or the branch and bound) and whether the
    optimum was proven. Returns the largest fleet proven optimal (all smaller ones too)."""
    print(f"\n## throughput, 200 layers, tight memory, budget {budget:g} s")
    proven = fleet[0] - 1
    for d in fleet:
        wall, result = plan_once(200, d, "throughput", budget, 0, "tight")
        method = (
            "dense DP"
            if result.stats.get("dense_dp")
            else "furthest-reach relaxation"
            if result.stats.get("relaxation_proof")
            else "branch and bound"
        )
        tie = (
            "tie-break proven" if result.stats.get("latency_tie_break_proven") else "tie-break open"
        )
        print(f"{d:>4} devices: {fmt(wall, result)}  ({method}, {tie})")
        if result.optimal and proven == d - 1:  # every fleet up to d proven
            proven = d
    return proven


def brute_force_agreement(cases: int) -> tuple[int, int]:
    """Random small profiles (2-7 layers, 2-4 devices, tight/roomy): solver vs every placement."""
    agree = total = 0
    for seed in range(cases):
        rng = np.random.default_rng(seed)
        n, d = int(rng.integers(2, 8)), int(rng.integers(2, 5))
        data = make_synthetic_profile(
            n, d, seed=seed, memory=("roomy", "tight")[seed % 2], link_scale=(1, 30, 300)[seed % 3]
        )
        profile = profile_from_dict(data)
        problem = build_problem(profile, 8)
        plans = brute_force(profile, 8, problem.devices, problem.max_stages, 0.2)
        for index, objective in enumerate(("latency", "throughput")):
            result = exact_search(problem, objective, 30.0)
            total += 1
            if not plans:
                agree += result.stages is None
                continue
            best = min(p[index] for p in plans)
            got = result.latency_ms if index == 0 else result.bottleneck_ms
            agree += abs(got - best) <= TOL * max(1.0, best)
    return agree, total


def budget_hits(budget: float, profiles: int) -> dict[str, tuple[int, int]]:
    """Random mid-size profiles (100-500 layers, 4-16 devices, roomy/tight), per objective:
    (runs stopped by the budget, runs)."""
    out = {"latency": (0, 0), "throughput": (0, 0)}
    rng = np.random.default_rng(1234)
    for i in range(profiles):
        n = int(rng.choice([100, 250, 500]))
        d = int(rng.choice([4, 8, 16]))
        memory = ("roomy", "tight")[i % 2]
        for objective in out:
            _, result = plan_once(n, d, objective, budget, seed=100 + i, memory=memory)
            hits, runs = out[objective]
            out[objective] = (hits + (not result.optimal), runs + 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=5.0, help="search budget per run (s)")
    parser.add_argument("--quick", action="store_true", help="smaller grid, fewer cases")
    args = parser.parse_args()
    sizes = [100, 250] if args.quick else [100, 250, 500, 1000]
    fleet = [4, 8] if args.quick else [4, 8, 16, 32]
    methods(args.budget)
    table = grid(args.budget, sizes, fleet)
    worst = targets_200x8(args.budget, 2 if args.quick else 5)
    big = {
        objective: table.get((1000, 32, objective)) or plan_once(1000, 32, objective, args.budget)
        for objective in ("latency", "throughput")
    }
    fleet_proven = fleet_reach(
        args.budget, [8, 9, 10, 11, 12] if args.quick else list(range(8, 17))
    )
    agree, total = brute_force_agreement(30 if args.quick else 150)
    print(f"\n## brute force: optimum equal on {agree}/{total} (small random profiles)")
    hit = budget_hits(args.budget, 6 if args.quick else 20)
    for objective, (hits, runs) in hit.items():
        print(f"## budget hits, {objective}: {hits}/{runs} random runs ({args.budget:g} s)")
    print()
    for objective in ("latency", "throughput"):
        print(f"bench: {objective} 200x8 worst = {worst[objective]:.2f} s (target < 1 s)")
    for objective in ("latency", "throughput"):
        wall, result = big[objective]
        gap = 0.0 if result.optimal else result.gap / result.objective_value * 100
        print(f"bench: {objective} 1000x32 = {wall:.2f} s (target < 10 s)")
        print(f"bench: {objective} 1000x32 gap = {gap:.2f} % (target = 0 % or stated)")
    print(f"bench: throughput 200xD proven optimal up to D = {fleet_proven} (tight, seed 0)")
    print(f"bench: brute-force agreement = {100 * agree / total:.1f} % (target = 100 %)")
    for objective, (hits, runs) in hit.items():
        share = 100 * hits / runs
        print(f"bench: {objective} budget hits = {share:.0f} % of {runs} (target = 0 %)")


if __name__ == "__main__":
    main()
