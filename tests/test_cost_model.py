"""The parts of the cost model that make predictions match a deployment: slice timings
scaled to the whole model's, and the runtime's per-message CPU cost on every hop."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from splitter.benchmark import calibrate
from splitter.planning.problem import build_problem
from splitter.profile import profile_from_dict
from splitter.synthetic import make_synthetic_profile


def test_calibration_scales_slices_to_the_whole_model_and_keeps_the_raw_sum():
    raw = {"1": {"median_ms": [1.0, 3.0], "p90_ms": [2.0, 6.0], "peak_activation_bytes": [1, 1],
                 "whole_median_ms": 0.8, "whole_p90_ms": 1.6}}  # fmt: skip
    got = calibrate(raw)["1"]
    assert got["median_ms"] == pytest.approx([0.2, 0.6])
    assert got["p90_ms"] == pytest.approx([0.4, 1.2])
    assert got["calibration"] == {"whole_median_ms": 0.8, "slices_sum_ms": 4.0, "scale": 0.2}
    assert "whole_median_ms" not in got
    untouched = {"1": {"median_ms": [1.0, None], "p90_ms": [1.0, None],
                       "peak_activation_bytes": [1, None], "whole_median_ms": 0.5}}  # fmt: skip
    assert calibrate(untouched)["1"]["median_ms"] == [1.0, None]  # a slice did not run: no scale


def test_every_hop_pays_half_of_each_ends_messaging_cost():
    data = make_synthetic_profile(6, 3, seed=2)
    plain = build_problem(profile_from_dict(copy.deepcopy(data)), 1)
    data["controller"]["messaging"] = {"fixed_ms": 0.2, "ms_per_mb": 0.0}
    for i, device in enumerate(data["devices"]):
        device["messaging"] = {"fixed_ms": 0.1 * (i + 1), "ms_per_mb": 1.0}
    costly = build_problem(profile_from_dict(data), 1)
    cut = np.array([c["bytes_per_sample"] for c in data["slices"]["cuts"]], dtype=float)
    for d in range(3):
        fixed = 0.1 * (d + 1)
        want_in = (0.2 + fixed + cut[0] / 1e6) / 2
        assert costly.transfer_in[d] - plain.transfer_in[d] == pytest.approx(want_in)
        want_out = (0.2 + fixed + cut[-1] / 1e6) / 2
        assert costly.transfer_out[d] - plain.transfer_out[d] == pytest.approx(want_out)
    want = (0.1 + 0.3) / 2 + cut / 1e6  # devices 0 → 2: both ends' bytes terms
    np.testing.assert_allclose(costly.transfer[0, 2] - plain.transfer[0, 2], want)


def test_the_runtime_measures_its_own_message_cost():
    from splitter_runtime.msgcost import measure

    cost = measure(rounds=10)
    assert cost["ms_per_mb"] > 0  # CURVE encrypts every byte
    assert 0 <= cost["fixed_ms"] < 50
