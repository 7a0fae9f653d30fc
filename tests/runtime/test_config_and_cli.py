"""stage.yaml validation, the sha256 gate, and the `splitter keys` / `run-local` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from splitter_runtime import config, keys
from splitter_runtime.errors import ConfigError
from splitter_runtime.local import LocalPipeline

ROOT = Path(__file__).resolve().parents[2]
SPLITTER = Path(sys.executable).parent / "splitter"


@pytest.fixture
def written(stages3, tmp_path) -> LocalPipeline:
    """A pipeline's files (keys, stage.yaml, gateway.yaml) without starting anything."""
    p = LocalPipeline(stages3, tmp_path / "files")
    p.write()
    return p


def test_written_configs_load_back(written):
    cfg = config.load_stage(written.config_paths["s1"])
    assert cfg.backend == "litert" and cfg.security.curve
    assert cfg.security.allow_upstream == [written.key("s0")]
    gw = config.load_gateway(written.config_paths["gateway"])
    assert [s.name for s in gw.stages] == ["s0", "s1", "s2"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["model"].update(backend="onnx"), "model.backend"),
        (lambda d: d["model"].update(sha256="xyz"), "model.sha256"),
        (lambda d: d.update(bind="localhost:5"), "bind"),
        (lambda d: d["inputs"][0].update(dtype="object"), "inputs[0].dtype"),
        (lambda d: d.update(limits={"hwm": -1}), "limits.hwm"),
        (lambda d: d.update(schema_version=9), "schema_version"),
        (lambda d: d["security"].pop("secret_key"), "security.secret_key"),
    ],
)
def test_config_errors_name_file_and_field(written, tmp_path, change, field):
    data = yaml.safe_load(written.config_paths["s1"].read_text())
    change(data)
    path = config.dump(data, tmp_path / "bad.stage.yaml")
    with pytest.raises(ConfigError) as err:
        config.load_stage(path)
    assert str(path) in err.value.cause and repr(field) in err.value.cause
    assert err.value.fix


def test_a_stage_refuses_a_model_whose_sha256_differs(written, tmp_path):
    data = yaml.safe_load(written.config_paths["s1"].read_text())
    data["model"]["sha256"] = "0" * 64
    path = config.dump(data, tmp_path / "s1.stage.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "splitter_runtime.stage", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "sha256" in proc.stderr and "expects " + "0" * 64 in proc.stderr


def test_runtime_never_imports_the_controller():
    code = (
        "import sys, splitter_runtime.stage, splitter_runtime.gateway, splitter_runtime.client, "
        "splitter_runtime.local; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('splitter', 'ansible', 'keras', 'tensorflow')]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_keys_command_writes_pairs_and_refuses_to_overwrite(tmp_path):
    run = [str(SPLITTER), "keys", str(tmp_path / "k"), "gateway", "s0"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    public, secret = keys.load_pair(tmp_path / "k" / "s0.key_secret")
    assert keys.load_public(tmp_path / "k" / "s0.key") == public and secret
    assert (tmp_path / "k" / "s0.key_secret").stat().st_mode & 0o077 == 0
    again = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--force" in again.stderr


@pytest.mark.timeout(240)
def test_run_local_serves_a_plan_and_stops_cleanly(slice_dir, tmp_path):
    plan = {
        "schema_version": 1,
        "kind": "splitter.plan",
        "objective": "latency",
        "batch_size": 1,
        "slices": {"path": str(slice_dir / "manifest.json")},
        "stages": [
            {"index": 0, "device": "local-a", "backend": "litert", "start": 0, "stop": 60},
            {"index": 1, "device": "local-b", "backend": "litert", "start": 60, "stop": 155},
        ],
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    proc = subprocess.run(
        [
            str(SPLITTER),
            "run-local",
            str(path),
            "--workdir",
            str(tmp_path / "run"),
            "--requests",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=200,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 stages up" in proc.stdout and "3 predictions" in proc.stdout
    logs = "".join(p.read_text() for p in sorted((tmp_path / "run" / "logs").glob("*.log")))
    assert "drained and stopped every process" in proc.stdout, proc.stderr + logs[-3000:]
    assert (tmp_path / "run" / "s0-local-a.stage.yaml").exists()


def test_run_local_rejects_a_broken_plan(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "kind": "splitter.plan", "stages": []}))
    proc = subprocess.run(
        [str(SPLITTER), "run-local", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "slices.path" in proc.stderr


def test_curve_off_configs_need_no_keys(stages3, tmp_path):
    p = LocalPipeline(stages3, tmp_path / "plain", curve=False)
    p.write()
    assert not (tmp_path / "plain" / "keys").exists()
    assert config.load_stage(p.config_paths["s0"]).security.curve is False
    assert config.load_gateway(p.config_paths["gateway"]).security.curve is False
