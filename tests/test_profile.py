"""profile.json: validated on read, errors name the file, the field and what was expected."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from splitter.errors import SplitterError
from splitter.planning.problem import build_problem
from splitter.profile import load_profile, profile_from_dict, save_profile
from splitter.synthetic import make_synthetic_profile, parse_spec


@pytest.fixture
def data() -> dict:
    return make_synthetic_profile(5, 3, seed=7)


def test_synthetic_profile_round_trips(tmp_path, data):
    path = tmp_path / "profile.json"
    save_profile(data, path)
    profile = load_profile(path)
    assert profile.n_slices == 5
    assert [d.name for d in profile.devices] == ["dev00", "dev01", "dev02"]
    assert len(profile.links) == 4 * 3  # every ordered pair of 3 devices + controller
    assert profile.synthetic


def _error(data: dict, source: str = "p.json") -> str:
    with pytest.raises(SplitterError) as info:
        profile_from_dict(data, source=source)
    return info.value.message


def test_missing_field_is_named(data):
    del data["devices"][1]["usable_memory_bytes"]
    msg = _error(data)
    assert "p.json" in msg and "devices.1" in msg and "usable_memory_bytes" in msg


def test_wrong_type_is_named(data):
    data["devices"][0]["backend"] = "onnx"
    msg = _error(data)
    assert "devices.0.backend" in msg and "litert" in msg


def test_schema_version_is_checked(data):
    data["schema_version"] = 99
    assert "schema_version" in _error(data)


def test_cut_count_must_match_slices(data):
    data["slices"]["cuts"].pop()
    assert "slices.cuts" in _error(data)


def test_per_slice_arrays_must_match(data):
    data["devices"][2]["compute"]["8"]["median_ms"].pop()
    assert "devices.2.compute.8.median_ms" in _error(data)


def test_every_batch_size_must_be_measured(data):
    del data["devices"][0]["compute"]["8"]
    assert "batch size 8" in _error(data)


def test_missing_link_is_named(data):
    data["links"] = [
        link for link in data["links"] if (link["from"], link["to"]) != ("dev01", "controller")
    ]
    msg = _error(data)
    assert "'dev01' to 'controller'" in msg


def test_link_to_unknown_device(data):
    data["links"][0]["to"] = "ghost"
    assert "ghost" in _error(data)


def test_duplicate_device_name(data):
    data["devices"][1]["name"] = "dev00"
    assert "dev00" in _error(data)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(SplitterError, match="does not exist"):
        load_profile(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SplitterError, match="not valid JSON"):
        load_profile(bad)


def test_slice_that_did_not_fit_is_never_placeable(data):
    entry = data["devices"][0]["compute"]["1"]
    entry["fits"][2] = False
    entry["median_ms"][2] = None
    entry["peak_activation_bytes"][2] = None
    problem = build_problem(profile_from_dict(copy.deepcopy(data)), 1)
    assert problem.reach[0, 0] == 2  # stops before slice 2
    assert problem.reach[0, 2] == 2  # nothing starting at slice 2
    assert problem.reach[1, 0] == 5  # other devices unaffected


def test_null_memory_alone_also_means_does_not_fit(data):
    entry = data["devices"][1]["compute"]["8"]
    entry.pop("fits")
    entry["peak_activation_bytes"][4] = None
    problem = build_problem(profile_from_dict(data), 8)
    assert problem.reach[1, 0] == 4


def test_batch_size_between_measured_ones_is_interpolated(data):
    profile = profile_from_dict(data)
    p1, p8 = build_problem(profile, 1), build_problem(profile, 8)
    p4 = build_problem(profile, 4)
    assert p4.interpolated and not p1.interpolated
    w = (4 - 1) / (8 - 1)
    want = p1.prefix_ms + w * (p8.prefix_ms - p1.prefix_ms)
    assert np.allclose(p4.prefix_ms, want)


@pytest.mark.parametrize("batch", [0, 9, 64])
def test_batch_size_outside_measured_range_is_refused(data, batch):
    with pytest.raises(SplitterError, match=r"outside the profiled sizes \[1, 8\]"):
        build_problem(profile_from_dict(data), batch)


def test_memory_model_matches_docs(data):
    """(max activation + k × params + runtime) × (1 + headroom), k = 2 for litert."""
    profile = profile_from_dict(data)
    problem = build_problem(profile, 8, headroom=0.25)
    dev = profile.devices[0]
    assert dev.backend == "litert"
    acts = dev.compute[8].peak_activation_bytes[1:4]
    params = sum(profile.param_bytes[1:4])
    want = (max(acts) + 2 * params + 40 * 2**20) * 1.25
    assert problem.memory_parts(0, 1, 4)[0] == pytest.approx(want)
    tf = profile.devices[1]
    assert tf.backend == "tensorflow" and tf.runtime_overhead_bytes == 550 * 2**20


def test_synthetic_spec_parsing():
    assert parse_spec("200x8") == (200, 8)
    with pytest.raises(SplitterError, match="LAYERSxDEVICES"):
        parse_spec("200")


def test_synthetic_profiles_are_deterministic():
    a = make_synthetic_profile(20, 4, seed=3, memory="tight")
    b = make_synthetic_profile(20, 4, seed=3, memory="tight")
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(a) != json.dumps(make_synthetic_profile(20, 4, seed=4, memory="tight"))
