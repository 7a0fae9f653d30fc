"""The embedded default without root: local devices (Ansible's local connection, one folder
tree each) run the same playbooks — benchmark, deploy, predict, undo — and undo leaves their
folders as empty as they started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splitter.local_devices import write_local_inventory

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "splitter")


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_the_whole_flow_on_local_devices_and_back_to_nothing(model_files, tmp_path):
    import keras

    from splitter.benchmark import run_benchmark
    from splitter.slicing import slice_model

    inventory = write_local_inventory(tmp_path / "local", count=2)
    devices = tmp_path / "local" / "devices"
    assert _tree(devices) == []
    slice_model(model_files("mobilenetv2"), tmp_path / "slices")
    run_benchmark(tmp_path / "slices", inventory, [1], tmp_path / "profile.json")
    env = {**os.environ, "SPLITTER_HOME": str(tmp_path / "home"), "COLUMNS": "200"}

    def cli(*args: str) -> str:
        done = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    try:
        cli("configure", str(tmp_path / "profile.json"), "-o", str(tmp_path / "plan.yaml"))
        cli("deploy", str(tmp_path / "plan.yaml"), "-i", str(inventory), "--name", "loc")
        assert any("venv" in p for p in _tree(devices))  # the runtime went into their folders
        os.environ["SPLITTER_HOME"] = env["SPLITTER_HOME"]
        from splitter.deploy import client

        model = keras.saving.load_model(model_files("mobilenetv2"), compile=False)
        x = np.random.default_rng(5).random((1, 96, 96, 3), dtype=np.float32)
        _, c = client("loc")
        with c:
            (got,) = c.predict(x).values()
        np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-4)
    finally:
        cli("undo", "--name", "loc")
    assert _tree(devices) == [], _tree(devices)  # as it started: nothing
