"""Runtime fixtures: a real MobileNetV2 (weights=None) sliced and re-cut into real stages.

Models are built once per session; every pipeline a test starts is stopped at teardown, even
when the test fails, so no stage process outlives the run.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path

import numpy as np
import pytest

# FLOP-balanced cuts of the example MobileNetV2 (155 slices); both cuts carry two tensors
# (inside residual blocks), so the multi-tensor wire path is exercised.
THREE_STAGES = [(0, 20), (20, 100), (100, 155)]


@pytest.fixture(scope="session")
def slice_dir(model_files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from splitter.slicing import slice_model

    out = tmp_path_factory.mktemp("rt") / "slices"
    slice_model(model_files("mobilenetv2"), out)
    return out


@pytest.fixture(scope="session")
def reference(model_files):
    """The whole original model: the ground truth a pipeline must reproduce."""
    import keras

    model = keras.saving.load_model(model_files("mobilenetv2"), compile=False)

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False))

    return run


@pytest.fixture(scope="session")
def stages3(slice_dir, tmp_path_factory):
    """Three LiteRT stages of MobileNetV2 as StageSpecs."""
    from splitter.run_local import build_stage_files

    n = len(__import__("json").loads((slice_dir / "manifest.json").read_text())["slices"])
    assert THREE_STAGES[-1][1] == n, f"the example model now has {n} slices; update THREE_STAGES"
    return build_stage_files(slice_dir, THREE_STAGES, tmp_path_factory.mktemp("stages3"))


@pytest.fixture
def pipelines(tmp_path):
    """Factory: ``pipelines(specs, **kw)`` starts a LocalPipeline; all are stopped at teardown."""
    from splitter_runtime.local import LocalPipeline

    started: list[LocalPipeline] = []

    def start(specs, name: str = "run", **kwargs) -> LocalPipeline:
        p = LocalPipeline(specs, tmp_path / f"{name}{len(started)}", **kwargs)
        started.append(p)
        p.start(timeout_s=90)
        return p

    yield start
    for p in started:
        for proc in p.procs.values():  # SIGCONT anything a test froze, so it can drain
            if proc.poll() is None:
                os.kill(proc.pid, 18)
        p.stop(timeout_s=10)
        assert not p.procs
