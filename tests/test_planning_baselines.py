"""Baselines are computed from the same profile and are what they say they are."""

from __future__ import annotations

import pytest

from splitter.planning.baselines import best_single_device, best_two_devices, even_split
from splitter.planning.problem import build_problem, evaluate, is_valid
from splitter.planning.search import exact_search
from splitter.profile import profile_from_dict
from splitter.synthetic import make_synthetic_profile


def _problems():
    for seed in range(40):
        memory = ("roomy", "tight")[seed % 2]
        data = make_synthetic_profile(3 + seed % 6, 2 + seed % 4, seed=seed, memory=memory)
        yield build_problem(profile_from_dict(data), 8)


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_best_two_devices_is_the_best_of_all_two_device_splits(objective):
    index = 0 if objective == "latency" else 1
    for pb in _problems():
        L, D = pb.n_slices, pb.n_devices
        plans = [
            [(d, 0, k), (e, k, L)]
            for d in range(D)
            for e in range(D)
            for k in range(1, L)
            if d != e and is_valid(pb, [(d, 0, k), (e, k, L)])
        ]
        got = best_two_devices(pb, objective)
        if not plans:
            assert got is None
            continue
        assert is_valid(pb, got)
        want = min(evaluate(pb, p)[index] for p in plans)
        assert evaluate(pb, got)[index] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_optimum_is_never_worse_than_a_baseline(objective):
    index = 0 if objective == "latency" else 1
    for pb in _problems():
        best = exact_search(pb, objective, budget_s=30)
        for plan in (best_single_device(pb, objective), even_split(pb)):
            if plan is not None:
                assert is_valid(pb, plan)
                assert best.stages is not None
                assert evaluate(pb, best.stages)[index] <= evaluate(pb, plan)[index] + 1e-9


def test_even_split_uses_every_device_in_order():
    data = make_synthetic_profile(12, 4, seed=3)
    pb = build_problem(profile_from_dict(data), 1)
    plan = even_split(pb)
    assert plan == [(0, 0, 3), (1, 3, 6), (2, 6, 9), (3, 9, 12)]
