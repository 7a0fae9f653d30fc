"""The solver's answer is the true optimum: checked against every placement enumerated.

Brute force (splitter.planning.brute_force) costs plans straight from the profile, with its
own memory model code, so an error in the solver's arrays shows up here.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter

import numpy as np
import pytest

from splitter.planning import search, subset_dp
from splitter.planning.baselines import baselines
from splitter.planning.bottleneck import Budget, min_bottleneck
from splitter.planning.brute_force import brute_force
from splitter.planning.graph import reference_solve
from splitter.planning.problem import build_problem, evaluate, is_valid
from splitter.planning.relaxation import relaxed_bounds
from splitter.planning.search import exact_search
from splitter.planning.subset_dp import solve as subset_solve
from splitter.profile import profile_from_dict
from splitter.synthetic import make_synthetic_profile

TOL = 1e-9


def _case(seed: int):
    """A small random profile and planning options, varied by seed."""
    rng = np.random.default_rng(seed)
    L, D = int(rng.integers(2, 8)), int(rng.integers(2, 5))
    memory = ["roomy", "tight"][seed % 2]
    link_scale = [1.0, 30.0, 300.0][seed % 3]
    data = make_synthetic_profile(L, D, seed=seed, memory=memory, link_scale=link_scale)
    profile = profile_from_dict(data)
    batch = int(rng.choice([1, 4, 8]))  # 4 is interpolated
    max_stages = None if seed % 4 else int(rng.integers(1, D + 1))
    headroom = float(rng.choice([0.0, 0.2, 0.5]))
    return profile, batch, max_stages, headroom


def _truth(plans, objective):
    """Optimal (latency, bottleneck) by brute force; lexicographic like the solver."""
    if objective == "latency":
        best = min(p[0] for p in plans)
        return best, min(p[1] for p in plans if p[0] <= best * (1 + TOL))
    best = min(p[1] for p in plans)
    return min(p[0] for p in plans if p[1] <= best * (1 + TOL)), best


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL * max(1.0, abs(b))


SEEDS = range(300)


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_exact_search_equals_brute_force(objective):
    kinds = Counter()
    for seed in SEEDS:
        profile, batch, max_stages, headroom = _case(seed)
        problem = build_problem(profile, batch, headroom=headroom, max_stages=max_stages)
        plans = brute_force(profile, batch, problem.devices, problem.max_stages, headroom)
        got = exact_search(problem, objective, budget_s=30)
        assert got.optimal, f"seed {seed}: budget hit on a tiny case"
        if not plans:
            assert got.stages is None, f"seed {seed}: brute force says no plan is valid"
            kinds["infeasible"] += 1
            continue
        assert got.stages is not None and is_valid(problem, got.stages), f"seed {seed}"
        lat, bot = _truth(plans, objective)
        if objective == "latency":
            assert _close(got.latency_ms, lat), (seed, got.latency_ms, lat)
        else:
            assert _close(got.bottleneck_ms, bot), (seed, got.bottleneck_ms, bot)
            assert _close(got.latency_ms, lat), (seed, got.latency_ms, lat)
        assert got.lower_bound <= got.objective_value + TOL
        kinds[f"{len(got.stages)} stages"] += 1
    # the cases must exercise what matters: splits, single devices and nothing-fits
    assert kinds["1 stages"] and kinds["infeasible"], kinds
    assert sum(v for k, v in kinds.items() if k not in ("1 stages", "infeasible")) >= 30, kinds


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_networkx_reference_equals_brute_force(objective):
    for seed in range(0, 300, 3):
        profile, batch, max_stages, headroom = _case(seed)
        problem = build_problem(profile, batch, headroom=headroom, max_stages=max_stages)
        plans = brute_force(profile, batch, problem.devices, problem.max_stages, headroom)
        ref = reference_solve(problem, objective)
        if not plans:
            assert ref is None, seed
            continue
        stages, lat, bot = ref
        assert is_valid(problem, stages), seed
        want_lat, want_bot = _truth(plans, objective)
        if objective == "latency":
            assert _close(lat, want_lat), (seed, lat, want_lat)
        else:
            assert _close(bot, want_bot), (seed, bot, want_bot)
            assert _close(lat, want_lat), (seed, lat, want_lat)


def _two_fast_small_devices() -> dict:
    """Devices A and B are fast but each holds only a few slices: alternating A, B, A, B is
    what an unconstrained shortest path picks; the slow roomy device C must be used too."""
    L = 6
    data = make_synthetic_profile(L, 3, seed=1, link_scale=1000.0)
    for dev, speed, mem in zip(data["devices"], [1.0, 1.0, 50.0], [2, 2, 6], strict=True):
        dev["backend"] = "tensorflow"
        dev.pop("runtime_overhead_bytes", None)
        for entry in dev["compute"].values():
            entry["median_ms"] = [speed] * L
            entry["p90_ms"] = [speed] * L
            entry["peak_activation_bytes"] = [0] * L
            entry["fits"] = [True] * L
        # room for exactly `mem` slices of 1 MB parameters beside the 550 MiB runtime
        dev["usable_memory_bytes"] = int((550 * 2**20 + mem * 1_000_000) * 1.2)
    data["slices"]["param_bytes"] = [1_000_000] * L
    return data


def test_plain_shortest_path_revisits_but_plan_does_not():
    profile = profile_from_dict(_two_fast_small_devices())
    problem = build_problem(profile, 1)
    relaxed = relaxed_bounds(problem).start_latency
    got = exact_search(problem, "latency")
    devices = [d for d, _, _ in got.stages]
    assert len(set(devices)) == len(devices)
    assert 2 in devices  # the slow roomy device must take a part
    # the relaxation (A → B → A → ...) is strictly cheaper: the rule really binds here
    assert relaxed < got.latency_ms - 1.0
    plans = brute_force(profile, 1, problem.devices, problem.max_stages, 0.2)
    assert _close(got.latency_ms, min(p[0] for p in plans))


def test_every_stage_fits_in_memory_with_headroom():
    for seed in range(1, 60, 2):  # tight memory
        profile, batch, _, headroom = _case(seed)
        problem = build_problem(profile, batch, headroom=headroom)
        got = exact_search(problem, "throughput")
        for d, a, b in got.stages or []:
            assert problem.memory_parts(d, a, b)[0] <= problem.usable[d]


def test_budget_zero_still_returns_a_bound_that_holds():
    hit = 0
    for seed in range(40):
        profile, batch, max_stages, headroom = _case(seed)
        problem = build_problem(profile, batch, headroom=headroom, max_stages=max_stages)
        plans = brute_force(profile, batch, problem.devices, problem.max_stages, headroom)
        if not plans:
            continue
        for objective in ("latency", "throughput"):
            got = exact_search(problem, objective, budget_s=0.0, incumbents=[])
            truth = _truth(plans, objective)[0 if objective == "latency" else 1]
            assert got.lower_bound <= truth + TOL * truth  # a proven bound never lies
            if got.stages is not None:
                assert got.objective_value >= truth - TOL * truth
                assert got.optimal or got.gap > 0 or _close(got.objective_value, truth)
            hit += not got.optimal
    assert hit, "budget 0 should stop at least one search early"


def test_max_stages_is_respected():
    for seed, k in itertools.product(range(0, 40, 3), (1, 2)):
        profile, batch, _, headroom = _case(seed)
        problem = build_problem(profile, batch, headroom=headroom, max_stages=k)
        got = exact_search(problem, "throughput")
        assert got.stages is None or len(got.stages) <= k


@pytest.mark.parametrize("objective", ["bottleneck", "latency"])
def test_subset_dp_equals_brute_force(objective):
    """The dense DP over (used set, device, cut) alone, unrestricted and at θ*."""
    index = 1 if objective == "bottleneck" else 0
    for seed in SEEDS:
        profile, batch, max_stages, headroom = _case(seed)
        problem = build_problem(profile, batch, headroom=headroom, max_stages=max_stages)
        plans = brute_force(profile, batch, problem.devices, problem.max_stages, headroom)
        got = subset_solve(problem, objective, np.inf, time.perf_counter() + 30)
        if not plans:
            assert got is None, seed
            continue
        value, stages = got
        assert is_valid(problem, stages), seed
        assert evaluate(problem, stages)[index] == value, seed  # bit-equal to evaluate
        assert _close(value, min(p[index] for p in plans)), (seed, value)
        if objective == "latency":  # at θ*: the fastest of the max-throughput plans
            theta = subset_solve(problem, "bottleneck", np.inf, time.perf_counter() + 30)[0]
            want = _truth(plans, "throughput")[0]
            value, stages = subset_solve(problem, "latency", theta, time.perf_counter() + 30)
            assert evaluate(problem, stages)[1] <= theta and _close(value, want), seed


def test_throughput_paths_agree(monkeypatch):
    """Each way to θ* alone — the DP, the furthest-reach relaxation then the branch and bound,
    the branch and bound alone (what large fleets use) — gives the same optimum, tie-break
    included."""
    modes = {
        "default": {},
        "dp only": {"RELAX_MAX_DEVICES": 0},
        "relaxation + b&b": {"MAX_STATES": 0, "TIE_DP_STATES": 0},
        "b&b only": {"MAX_STATES": 0, "TIE_DP_STATES": 0, "RELAX_MAX_DEVICES": 0},
    }
    used = Counter()
    for seed in range(0, 300, 2):
        profile, batch, max_stages, headroom = _case(seed)
        problem = build_problem(profile, batch, headroom=headroom, max_stages=max_stages)
        incumbents = [p for p in baselines(problem, "throughput").values() if p]
        results = {}
        for mode, patch in modes.items():
            with monkeypatch.context() as m:
                for name, value in patch.items():
                    m.setattr(subset_dp if name == "MAX_STATES" else search, name, value)
                results[mode] = got = exact_search(problem, "throughput", 30, incumbents)
            assert got.optimal, (seed, mode)
            used[mode, "dp"] += got.stats["dense_dp"]
            used[mode, "relaxation"] += got.stats["relaxation_proof"]
        ref = results["default"]
        for mode, got in results.items():
            if ref.stages is None:
                assert got.stages is None, (seed, mode)
                continue
            assert _close(got.bottleneck_ms, ref.bottleneck_ms), (seed, mode)
            assert _close(got.latency_ms, ref.latency_ms), (seed, mode)
    assert used["dp only", "dp"] and not used["dp only", "relaxation"], used
    assert used["relaxation + b&b", "relaxation"] and not used["b&b only", "relaxation"], used
    assert not used["b&b only", "dp"] and not used["relaxation + b&b", "dp"], used


def test_throughput_avoids_a_b_a():
    """The bottleneck relaxation alternates the fast small devices A, B, A, B; the DP may not,
    so the slow roomy device C takes a part and the bottleneck is far above the relaxation."""
    profile = profile_from_dict(_two_fast_small_devices())
    problem = build_problem(profile, 1)
    relaxed = relaxed_bounds(problem).start_bottleneck
    got = exact_search(problem, "throughput")
    assert got.optimal and got.stats["latency_tie_break_proven"]
    devices = [d for d, _, _ in got.stages]
    assert len(set(devices)) == len(devices) and 2 in devices
    assert relaxed < got.bottleneck_ms - 1.0
    plans = brute_force(profile, 1, problem.devices, problem.max_stages, 0.2)
    lat, bot = _truth(plans, "throughput")
    assert _close(got.bottleneck_ms, bot) and _close(got.latency_ms, lat)


def test_subset_dp_medium_profiles_match_branch_and_bound():
    """Beyond brute force: 40 × 6 profiles, tight and roomy, DP vs the branch and bound."""
    for seed in range(6):
        memory = ("roomy", "tight")[seed % 2]
        data = make_synthetic_profile(40, 6, seed=seed, memory=memory, link_scale=(1, 30)[seed % 2])
        problem = build_problem(profile_from_dict(data), 8)
        deadline = time.perf_counter() + 60
        got = subset_solve(problem, "bottleneck", np.inf, deadline)
        want, proven = min_bottleneck(problem, np.inf, deadline)
        assert proven
        if want is None:
            assert got is None
            continue
        assert is_valid(problem, got[1])
        assert got[0] == evaluate(problem, want)[1], seed


def test_subset_dp_budget():
    data = make_synthetic_profile(200, 8, seed=0)
    problem = build_problem(profile_from_dict(data), 8)
    with pytest.raises(Budget):
        subset_solve(problem, "bottleneck", np.inf, time.perf_counter() - 1)
    got = exact_search(problem, "throughput", budget_s=0.0)  # stops at once, bound holds
    assert not got.optimal and got.lower_bound <= got.bottleneck_ms


@pytest.mark.parametrize("bottleneck", [True, False])
def test_last_stage_equals_a_full_scan(bottleneck):
    """The range-minimum step of the DP against every start k tried one by one."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        p, n = int(rng.integers(1, 6)), int(rng.integers(2, 80))
        A = rng.uniform(0, 50, size=(p, n)).round(int(rng.integers(0, 3)))  # ties too
        A[rng.random((p, n)) < 0.4] = np.inf
        steps = rng.uniform(0, 5, size=(p, n - 1)) * (rng.random((p, n - 1)) < 0.8)
        Pp = np.concatenate([np.zeros((p, 1)), np.cumsum(steps, axis=1)], axis=1)
        lop = np.minimum(
            np.maximum.accumulate(rng.integers(0, n, size=(p, n)) // 2, axis=1), np.arange(n)
        )
        value, step = subset_dp.last_stage(A, Pp, lop, bottleneck, time.perf_counter() + 10)
        for r in range(p):
            for b in range(n):
                ks = range(lop[r, b], b)
                costs = [
                    max(A[r, k], Pp[r, b] - Pp[r, k])
                    if bottleneck
                    else A[r, k] + (Pp[r, b] - Pp[r, k])
                    for k in ks
                ]
                want = min(costs, default=np.inf)
                if not np.isfinite(want):
                    assert value[r, b] == np.inf
                    continue
                k = b - step[r, b]
                assert lop[r, b] <= k < b
                assert value[r, b] == costs[k - lop[r, b]]  # the value of the chosen start
                if bottleneck:
                    assert value[r, b] == want
                else:
                    assert _close(value[r, b], want)


def test_furthest_reach_relaxation_is_a_lower_bound():
    """The relaxation that ignores links between devices: feasible at every true optimum θ*,
    so the bound it proves never exceeds θ*, and its plan is a valid placement."""
    for seed in SEEDS:
        profile, batch, max_stages, headroom = _case(seed)
        problem = build_problem(profile, batch, headroom=headroom, max_stages=max_stages)
        got = subset_solve(problem, "bottleneck", np.inf, time.perf_counter() + 30)
        if got is None:
            continue
        theta = got[0]
        relaxed = subset_dp.furthest_feasible(problem, theta)
        assert relaxed is not None and is_valid(problem, relaxed), seed
        bound, _ = subset_dp.furthest_bound(problem, 0.0, 2 * theta, time.perf_counter() + 30)
        assert bound <= theta, seed
    # larger: the bound against the DP's optimum
    for seed in range(4):
        data = make_synthetic_profile(60, 7, seed=seed, memory=("roomy", "tight")[seed % 2])
        problem = build_problem(profile_from_dict(data), 8)
        theta = subset_solve(problem, "bottleneck", np.inf, time.perf_counter() + 60)[0]
        bound, _ = subset_dp.furthest_bound(problem, 0.0, 2 * theta, time.perf_counter() + 30)
        assert bound <= theta and bound >= 0.5 * theta, seed
