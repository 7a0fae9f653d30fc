"""Inference backends: LiteRT for ``.tflite`` stages, TensorFlow for ``.keras`` stages.

Each backend is imported lazily, only when a stage uses it, so a LiteRT device never pays for
(or needs) TensorFlow. Inputs and outputs are dicts keyed by tensor name: always feed by name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from splitter_runtime.errors import ConfigError


class Backend(Protocol):
    """Runs one stage model on a dict of named arrays (first dimension = batch)."""

    name: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_model(path: Path, sha256: str) -> None:
    """Refuse a model file that is missing or not the one the config names."""
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist", "copy the stage model there")
    got = sha256_file(path)
    if got != sha256:
        raise ConfigError(
            f"model file {path} has sha256 {got}, but the config expects {sha256}",
            "copy the right model file, or regenerate the config for this file",
        )


class LiteRTBackend:
    """``ai_edge_litert`` Interpreter with XNNPACK; the signature runner resizes the batch."""

    name = "litert"

    def __init__(self, path: Path, num_threads: int) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ConfigError(
                "the LiteRT backend needs the ai-edge-litert package",
                "pip install 'splitter-runtime[litert]' on this device",
            ) from None
        self._interp = Interpreter(model_path=str(path), num_threads=num_threads)
        sigs = self._interp.get_signature_list()
        if not sigs:
            raise ConfigError(f"{path} has no signature", "convert the stage with named I/O")
        self._runner = self._interp.get_signature_runner(next(iter(sigs)))
        self.input_names = list(self._runner.get_input_details())
        self.output_names = list(self._runner.get_output_details())

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(self._runner(**inputs))


class TensorFlowBackend:
    """A ``.keras`` stage under ``tf.function`` (graph mode): the fallback where LiteRT is not."""

    name = "tensorflow"

    def __init__(self, path: Path, num_threads: int, *, eager: bool = False) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import keras
            import tensorflow as tf
        except ImportError:
            raise ConfigError(
                "the tensorflow backend needs TensorFlow",
                "pip install 'splitter-runtime[tensorflow]' on this device, or use a .tflite",
            ) from None
        try:
            tf.config.threading.set_intra_op_parallelism_threads(num_threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # already initialised in this process (tests/bench); keep its setting
        self._tf = tf
        self._model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
        self._fn = self._model if eager else tf.function(self._model, reduce_retracing=True)
        self.name = "keras" if eager else "tensorflow"
        self.input_names = list(getattr(self._model, "input_names", None) or [])
        self.output_names = list(getattr(self._model, "output_names", None) or [])

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._fn({k: self._tf.constant(v) for k, v in inputs.items()})
        if not isinstance(out, Mapping):
            raise ConfigError("the stage model does not return a dict", "rebuild with dict I/O")
        return {k: np.asarray(v) for k, v in out.items()}


def load(kind: str, path: Path, num_threads: int) -> Backend:
    """The backend named ``kind`` with the stage model at ``path`` loaded."""
    if kind == "litert":
        return LiteRTBackend(path, num_threads)
    if kind in ("tensorflow", "keras"):
        return TensorFlowBackend(path, num_threads, eager=(kind == "keras"))
    raise ConfigError(f"unknown backend {kind!r}", "use litert, tensorflow or keras")
