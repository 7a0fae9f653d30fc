"""Slicing real architectures and hand-made odd graphs: the chain must equal the model."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from splitter.checksums import sha256_of
from splitter.errors import SplitterError
from splitter.manifest import read_manifest
from splitter.slicing import slice_model
from splitter.stages import build_stage_model
from splitter.verify import DEFAULT_TOLERANCE


def _slice_and_check(model_path, out_dir):
    result = slice_model(model_path, out_dir, verify=True)
    report = result.verification
    assert report.ok, report
    assert report.max_rel <= DEFAULT_TOLERANCE
    assert len(report.stages) >= 2  # the whole range plus random sub-ranges
    assert all(check.max_rel <= DEFAULT_TOLERANCE for check in report.stages)
    manifest = read_manifest(out_dir)  # validates schema, consistency and every checksum
    assert len(manifest.slices) == result.slice_count
    return manifest


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mobilenetv2", "resnet50", "densenet121"])
def test_applications_slice_and_chain_to_the_original(kind, model_files, tmp_path):
    model_path = model_files(kind)
    manifest = _slice_and_check(model_path, tmp_path / "slices")
    model = keras.saving.load_model(model_path)
    # One slice per layer call: these models call each layer once and InputLayer is no slice.
    layer_calls = [op for op in model.operations if not isinstance(op, keras.layers.InputLayer)]
    assert len(manifest.slices) == len(layer_calls)
    assert [s["layers"][0] for s in manifest.slices] != []
    assert {s["layers"][0] for s in manifest.slices} == {op.name for op in layer_calls}
    # Residual adds / concatenations make cuts that carry two tensors.
    assert max(len(cut["tensors"]) for cut in manifest.cuts) == 2
    assert manifest.data["source"]["sha256"] == sha256_of(model_path)
    total_params = sum(s["param_bytes"] for s in manifest.slices)
    assert total_params == sum(int(np.prod(w.shape)) * 4 for w in model.weights)


@pytest.mark.slow
def test_inception_cuts_carry_many_parallel_branches(tmp_path):
    model = keras.applications.InceptionV3(weights=None, input_shape=(75, 75, 3), classes=5)
    path = tmp_path / "inception.keras"
    model.save(path)
    manifest = _slice_and_check(path, tmp_path / "slices")
    assert max(len(cut["tensors"]) for cut in manifest.cuts) >= 4


def test_multi_io_shared_layer_nested_model_and_ops(model_files, tmp_path):
    manifest = _slice_and_check(model_files("branchy"), tmp_path / "slices")
    layers = [s["layers"][0] for s in manifest.slices]
    # The nested Sequential "stem" is flattened: its conv is a slice of its own.
    assert "stem" not in layers and any(name.startswith("conv2d") for name in layers)
    # The shared Dense is called twice: two slices, two distinct output tensors.
    assert layers.count("shared") == 2
    shared_outs = {
        spec["name"]
        for s in manifest.slices
        if s["layers"] == ["shared"]
        for spec in s["outputs"]
        if spec["name"].startswith("shared__")
    }
    assert shared_outs == {"shared__0__0", "shared__1__0"}
    # keras.ops arithmetic (x * 0.5 + 1.0) appears as operations of its own.
    assert {"multiply", "add"} <= {name.split("_")[0] for name in layers}
    assert [t["name"] for t in manifest.data["inputs"]] == ["image__0__0", "extra__0__0"]
    # Re-cut as one stage, the shared layer is held once: same weights as the original.
    stage = build_stage_model(manifest, 0, len(manifest.slices))
    original = keras.saving.load_model(model_files("branchy"))
    assert len(stage.weights) == len(original.weights)
    assert len(manifest.data["outputs"]) == 2


def test_top_level_sequential_model(tmp_path):
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
    path = tmp_path / "seq.keras"
    model.save(path)
    manifest = _slice_and_check(path, tmp_path / "slices")
    assert len(manifest.slices) == 2


def test_legacy_h5_model_is_sliced(tmp_path):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Concatenate()([hidden, inputs])))
    path = tmp_path / "legacy.h5"
    model.save(path)
    manifest = _slice_and_check(path, tmp_path / "slices")
    assert len(manifest.slices) == 3


def _lambda_model(path):
    inputs = keras.Input((4,))
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    keras.Model(inputs, keras.layers.Dense(2)(doubled)).save(path)
    return path


def test_lambda_layer_is_refused_in_safe_mode_and_loads_with_unsafe(tmp_path):
    path = _lambda_model(tmp_path / "lambda.keras")
    with pytest.raises(SplitterError, match="--unsafe"):
        slice_model(path, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    result = slice_model(path, tmp_path / "slices", unsafe=True, verify=True)
    assert result.verification.ok
    assert json.loads((tmp_path / "slices" / "manifest.json").read_text())["source"]["unsafe"]


def test_tampered_slice_file_is_detected(model_files, tmp_path):
    out = tmp_path / "slices"
    slice_model(model_files("branchy"), out)
    victim = out / "slice_0003.keras"
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(SplitterError, match=r"slice_0003\.keras.*sha256"):
        read_manifest(out)


def test_manifest_schema_errors_name_the_field(model_files, tmp_path):
    out = tmp_path / "slices"
    slice_model(model_files("branchy"), out)
    data = json.loads((out / "manifest.json").read_text())
    data["slices"][2]["sha256"] = "not-a-hash"
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(SplitterError, match=r"slices\[2\]\.sha256"):
        read_manifest(out)
