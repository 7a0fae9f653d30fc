"""`splitter configure` end to end: synthetic profile in, validated plan.yaml out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from splitter.cli.app import app
from splitter.planning.plan_file import load_plan
from splitter.profile import save_profile
from splitter.synthetic import make_synthetic_profile

runner = CliRunner()


@pytest.fixture
def profile_path(tmp_path):
    path = tmp_path / "profile.json"
    save_profile(make_synthetic_profile(30, 4, seed=2, link_scale=30.0), path)
    return path


def _run(*args: str):
    import splitter.cli  # noqa: F401  (registers the commands)

    return runner.invoke(app, ["configure", *map(str, args)])


def test_writes_a_valid_plan_and_compares_baselines(profile_path, tmp_path):
    out = tmp_path / "plan.yaml"
    res = _run(profile_path, "-o", out, "--objective", "throughput", "--batch-size", "8")
    assert res.exit_code == 0, res.output
    plan = load_plan(out)
    assert plan["objective"] == "throughput" and plan["batch_size"] == 8
    stages = plan["stages"]
    assert stages[0]["start"] == 0 and stages[-1]["stop"] == 30
    assert stages[0]["receives_from"] == "controller" and stages[-1]["sends_to"] == "controller"
    assert all(s["memory"]["needed_bytes"] <= s["memory"]["usable_bytes"] for s in stages)
    assert plan["predicted"]["throughput_rps"] == pytest.approx(
        8000 / plan["predicted"]["bottleneck_ms"], rel=1e-5
    )
    for name in ("best single device", "even split", "best two-device split"):
        assert name in res.output


def test_json_summary(profile_path, tmp_path):
    res = _run(profile_path, "-o", tmp_path / "p.yaml", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["objective"] == "latency" and summary["optimal"] is True
    single = summary["baselines"]["best single device"]
    assert single is None or summary["latency_ms"] <= single["latency_ms"] + 1e-9


def test_synthetic_option_and_plot(tmp_path):
    prof, plot = tmp_path / "synthetic.json", tmp_path / "plan.png"
    res = _run(prof, "--synthetic", "40x5", "-o", tmp_path / "p.yaml", "--plot", plot)
    assert res.exit_code == 0, res.output
    assert prof.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_devices_and_exclude(profile_path, tmp_path):
    out = tmp_path / "p.yaml"
    res = _run(profile_path, "-o", out, "--devices", "dev01,dev02", "--exclude", "dev02")
    assert res.exit_code == 0, res.output
    assert {s["device"] for s in load_plan(out)["stages"]} == {"dev01"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--devices", "dev01,pi-9"], "'pi-9', which is not in"),
        (["--exclude", "nobody"], "'nobody'"),
        (["--batch-size", "32"], "outside the profiled sizes"),
        (["--objective", "fastest"], "--objective"),
    ],
)
def test_bad_options_exit_2_with_cause_and_fix(profile_path, tmp_path, args, expected):
    res = _run(profile_path, "-o", tmp_path / "p.yaml", *args)
    assert res.exit_code == 2
    assert expected in res.output
    assert "—" in res.output  # cause — fix


def test_nothing_fits_names_need_and_largest_device(tmp_path):
    data = make_synthetic_profile(6, 2, seed=5)
    for dev in data["devices"]:
        dev["usable_memory_bytes"] = 30 * 2**20  # below either runtime alone
    path = tmp_path / "small.json"
    save_profile(data, path)
    res = _run(path, "-o", tmp_path / "p.yaml", "--batch-size", "8")
    assert res.exit_code == 2
    assert "need" in res.output and "at batch 8" in res.output and "usable" in res.output
    assert "largest device 'dev0" in res.output


def test_profile_for_another_slice_set_is_refused(profile_path, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    res = _run(profile_path, "-o", tmp_path / "p.yaml", "--slices", manifest)
    assert res.exit_code == 2 and "measured on slice set" in res.output


def test_planning_imports_no_tensorflow_or_sockets():
    code = (
        "import sys, splitter.planning, splitter.profile, splitter.synthetic;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'zmq', 'ansible', 'ansible_runner', 'ai_edge_litert')];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
