"""plan.yaml: what the runtime reads is complete, consistent and validated on read."""

from __future__ import annotations

import pytest
import yaml

from splitter.errors import SplitterError
from splitter.planning import PlanOptions, load_plan, make_plan, plan_document, write_plan
from splitter.profile import profile_from_dict
from splitter.synthetic import make_synthetic_profile


@pytest.fixture
def plan_path(tmp_path):
    profile = profile_from_dict(make_synthetic_profile(24, 4, seed=11, link_scale=50.0))
    result = make_plan(profile, PlanOptions(objective="throughput", batch_size=8))
    path = tmp_path / "plan.yaml"
    write_plan(plan_document(result, "profile.json", "0" * 64), path)
    return path, profile


def test_stages_carry_what_the_runtime_needs(plan_path):
    path, profile = plan_path
    plan = load_plan(path)
    assert plan["slices"]["sha256"] == profile.slices_sha256
    prev_stop = 0
    for i, stage in enumerate(plan["stages"]):
        dev = profile.device(stage["device"])
        assert stage["index"] == i and stage["address"] == dev.address
        assert stage["backend"] == dev.backend
        assert stage["start"] == prev_stop
        assert stage["inputs"] == list(profile.cuts[stage["start"]].tensors)
        assert stage["outputs"] == list(profile.cuts[stage["stop"]].tensors)
        assert stage["bytes_in"] == profile.cuts[stage["start"]].bytes_per_sample * 8
        prev_stop = stage["stop"]
    assert prev_stop == profile.n_slices


def test_predicted_latency_is_the_sum_of_its_parts(plan_path):
    plan = load_plan(plan_path[0])
    stages = plan["stages"]
    total = sum(s["compute_ms"] + s["transfer_in_ms"] for s in stages)
    total += stages[-1]["transfer_out_ms"]
    assert plan["predicted"]["latency_ms"] == pytest.approx(total, rel=1e-6)
    parts = [s["compute_ms"] for s in stages] + [s["transfer_in_ms"] for s in stages]
    parts.append(stages[-1]["transfer_out_ms"])
    assert plan["predicted"]["bottleneck_ms"] == pytest.approx(max(parts), rel=1e-6)


def _rewrite(path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(schema_version=2), "schema_version"),
        (lambda d: d["stages"][0].pop("address"), "address"),
        (lambda d: d["stages"][0].update(backend="onnx"), "stages.0.backend"),
        (lambda d: d["stages"][-1].update(start=d["stages"][-1]["start"] + 1), "contiguous"),
        (lambda d: d["stages"][-1].update(device=d["stages"][0]["device"]), "device twice"),
    ],
)
def test_bad_plans_are_refused_naming_the_field(plan_path, change, expected):
    path = plan_path[0]
    _rewrite(path, change)
    with pytest.raises(SplitterError) as info:
        load_plan(path)
    assert expected in info.value.message and str(path) in info.value.message
