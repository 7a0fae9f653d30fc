"""Re-cut stages and their LiteRT conversion, run in the real ai-edge-litert interpreter."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from splitter.errors import SplitterError
from splitter.manifest import read_manifest
from splitter.slicing import slice_model
from splitter.stages import build_stage_model, convert_to_tflite, run_tflite
from splitter.verify import compare, random_inputs, run_chain

LITERT_TOLERANCE = 1e-4  # XNNPACK reorders float sums; the Keras chain itself is bit-exact


@pytest.fixture(scope="module")
def mobilenet_slices(model_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("mnv2") / "slices"
    slice_model(model_files("mobilenetv2"), out)
    return read_manifest(out)


def _stage_io(manifest, start, stop, batch=1):
    inputs = random_inputs(manifest.data["inputs"], batch, seed=1)
    chain = run_chain(manifest, inputs)
    return chain[start], chain[stop]


def test_two_input_stage_converts_and_matches_in_litert(mobilenet_slices, tmp_path):
    manifest = mobilenet_slices
    # A range that starts where a residual skip is in flight: two tensors enter the stage.
    start = next(i for i, cut in enumerate(manifest.cuts) if len(cut["tensors"]) == 2)
    stop = start + 12
    stage = build_stage_model(manifest, start, stop)
    assert sorted(t.name for t in stage.inputs) == sorted(manifest.cuts[start]["tensors"])
    assert len(stage.inputs) == 2
    result = convert_to_tflite(stage, tmp_path / "stage.tflite")
    assert result.ok and result.backend == "litert" and result.size_bytes > 0, result.reason
    given, expected = _stage_io(manifest, start, stop)
    got = run_tflite(result.path, given)
    assert set(got) == set(manifest.cuts[stop]["tensors"])
    _, rel = compare(expected, got)
    assert rel <= LITERT_TOLERANCE


def test_whole_model_stage_in_litert_matches_keras(mobilenet_slices, model_files, tmp_path):
    manifest = mobilenet_slices
    count = len(manifest.slices)
    stage = build_stage_model(manifest, 0, count)
    result = convert_to_tflite(stage, tmp_path / "whole.tflite")
    assert result.ok, result.reason
    given = random_inputs(manifest.data["inputs"], 1, seed=3)
    original = keras.saving.load_model(model_files("mobilenetv2"))
    (name,) = given
    expected = {manifest.data["outputs"][0]["name"]: np.asarray(original(given[name]))}
    _, rel = compare(expected, run_tflite(result.path, given))
    assert rel <= LITERT_TOLERANCE


def test_multi_input_multi_output_model_converts(model_files, tmp_path):
    out = tmp_path / "slices"
    slice_model(model_files("branchy"), out)
    manifest = read_manifest(out)
    count = len(manifest.slices)
    stage = build_stage_model(manifest, 0, count)
    result = convert_to_tflite(stage, tmp_path / "branchy.tflite")
    assert result.ok, result.reason
    given = random_inputs(manifest.data["inputs"], 1, seed=4)
    expected = run_chain(manifest, given)[-1]
    got = run_tflite(result.path, given)
    assert set(got) == {spec["name"] for spec in manifest.data["outputs"]}
    _, rel = compare(expected, got)
    assert rel <= LITERT_TOLERANCE


def test_conversion_failure_is_reported_not_raised(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.ops.erfinv(inputs * 0.1))  # no TFLite builtin for Erfinv
    result = convert_to_tflite(model, tmp_path / "no.tflite")
    assert not result.ok and result.backend == "tensorflow"
    assert result.reason and "Erfinv" in result.reason
    assert not (tmp_path / "no.tflite").exists()


def test_out_of_range_stage_is_a_clear_error(mobilenet_slices):
    count = len(mobilenet_slices.slices)
    with pytest.raises(SplitterError, match=r"outside the slice set"):
        build_stage_model(mobilenet_slices, 5, count + 1)
    with pytest.raises(SplitterError, match=r"outside the slice set"):
        build_stage_model(mobilenet_slices, 7, 7)
