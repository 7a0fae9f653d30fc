"""Re-cut a contiguous range of slices as ONE model, and convert it for LiteRT.

A deployed stage must not pay per-slice overhead, so the range's slices are joined into
a single flat Keras model (same weights, dict inputs and outputs named by tensor), which
is then converted to a builtins-only ``.tflite`` where the ops allow it.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitter.errors import SplitterError
from splitter.manifest import Manifest, read_manifest


def load_slice(manifest: Manifest, index: int, *, unsafe: bool = False) -> Any:
    """Load slice ``index`` with Keras safe mode (off only for sets sliced with --unsafe)."""
    import keras

    if unsafe and not manifest.data["source"]["unsafe"]:
        unsafe = False  # never relax safety for a set that did not need it
    if manifest.data["source"]["unsafe"] and not unsafe:
        raise SplitterError(
            f"slice set '{manifest.directory}' was made with --unsafe (it holds Python code)",
            "pass unsafe=True / --unsafe if you trust it",
        )
    return keras.saving.load_model(manifest.slice_path(index), compile=False, safe_mode=not unsafe)


def build_stage_model(
    slice_dir: Path | str | Manifest, start: int, stop: int, *, unsafe: bool = False
) -> Any:
    """One flat Keras model for slices ``[start, stop)``: takes cuts[start], gives cuts[stop].

    Inputs and outputs are dicts keyed by tensor name, in the manifest's order.
    """
    import keras

    from splitter import keras_graph as kg

    manifest = slice_dir if isinstance(slice_dir, Manifest) else read_manifest(slice_dir)
    manifest.check_range(start, stop)
    inputs = {
        spec["name"]: keras.Input(
            batch_shape=tuple(spec["shape"]), dtype=spec["dtype"], name=spec["name"]
        )
        for spec in manifest.cut_tensors(start)
    }
    values: dict[str, Any] = dict(inputs)
    shared: dict[str, Any] = {}  # one object per layer name, so shared weights are held once
    for index in range(start, stop):
        sliced = load_slice(manifest, index, unsafe=unsafe)
        values.update(kg.call_inlined(sliced, values, shared))
    outputs = {spec["name"]: values[spec["name"]] for spec in manifest.cut_tensors(stop)}
    return keras.Model(inputs, outputs, name=f"stage_{start}_{stop}")


@dataclass(frozen=True)
class ConversionResult:
    """Outcome of a LiteRT conversion: the file, or why the stage must run on TensorFlow."""

    ok: bool
    path: Path | None
    reason: str | None
    seconds: float
    size_bytes: int = 0

    @property
    def backend(self) -> str:
        return "litert" if self.ok else "tensorflow"


def convert_to_tflite(model: Any, path: Path | str, *, check: bool = True) -> ConversionResult:
    """Convert with TFLite builtin ops only, so the file runs on plain ``ai-edge-litert``.

    Select-TF ops would convert but fail on the edge interpreter, so they are not allowed.
    With ``check``, each candidate file is run once on random input and must reproduce the
    Keras model (a conversion can succeed and still compute garbage, e.g. weights left as
    resource variables that read as NaN); the next method is tried otherwise. A failure is
    returned with its reason rather than raised: the stage then runs on TensorFlow.
    """
    path = Path(path)
    started = time.perf_counter()
    errors = []
    for convert in (_convert_traced, _convert_frozen_keras, _convert_exported):
        try:
            with _quiet():
                content = convert(model)
        except Exception as error:  # the converter raises many types; all mean "not this way"
            lines = str(error).strip().splitlines()
            errors.append((lines[0] if lines else type(error).__name__)[:500])
            continue
        if check:
            mismatch = _numeric_mismatch(model, content)
            if mismatch:
                errors.append(f"{convert.__name__.strip('_')}: {mismatch}")
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return ConversionResult(True, path, None, time.perf_counter() - started, len(content))
    return ConversionResult(False, None, errors[-1], time.perf_counter() - started)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The converters print SavedModel signatures and structure warnings; keep the CLI clean."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


CHECK_TOLERANCE = 1e-3  # relative; XNNPACK reorders float sums


def _numeric_mismatch(model: Any, content: bytes) -> str | None:
    """Why the converted ``content`` does not reproduce ``model``, or None when it does."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from splitter.verify import compare, random_inputs

    specs = [{"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)} for t in model.inputs]
    given = random_inputs(specs, 1, seed=7)
    expected = {k: np.asarray(v) for k, v in model(given).items()}
    try:
        runner = Interpreter(model_content=content).get_signature_runner()
        got = dict(runner(**given))
    except Exception as error:  # an interpreter that cannot run the file
        return f"the converted file does not run ({str(error).splitlines()[0][:200]})"
    if set(got) != set(expected):
        return f"outputs {sorted(got)} differ from the model's {sorted(expected)}"
    _, relative = compare(expected, got)
    if not np.isfinite(relative) or relative > CHECK_TOLERANCE:
        return f"the converted file computes different values (relative difference {relative:.3g})"
    return None


def _converter_for(source: Any) -> Any:
    import tensorflow as tf

    converter = source
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def _convert_traced(model: Any) -> bytes:
    """Fast path: trace the model with a dict signature named by tensor (no disk round trip)."""
    import tensorflow as tf

    specs = {t.name: tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in model.inputs}
    function = tf.function(lambda inputs: model(inputs, training=False), input_signature=[specs])
    concrete = function.get_concrete_function()
    return _converter_for(
        tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    ).convert()


def _convert_frozen_keras(model: Any) -> bytes:
    """Second try: the Keras converter with resource variables off (weights frozen)."""
    import tensorflow as tf

    converter = _converter_for(tf.lite.TFLiteConverter.from_keras_model(model))
    converter.experimental_enable_resource_variables = False
    return converter.convert()


def _convert_exported(model: Any) -> bytes:
    """Fallback: through a SavedModel export, which handles what tracing cannot."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="splitter-export-") as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        return _converter_for(tf.lite.TFLiteConverter.from_saved_model(saved)).convert()


def run_tflite(path: Path | str, inputs: dict[str, Any], num_threads: int = 2) -> dict[str, Any]:
    """Run a converted stage once, feeding inputs by name (signature order is not Keras')."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    runner = interpreter.get_signature_runner()
    return dict(runner(**inputs))
