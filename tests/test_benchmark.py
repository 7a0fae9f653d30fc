"""`splitter benchmark` on a real 3-device lab: real SSH, real cgroup limits and quotas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest
import yaml

from splitter.benchmark import run_benchmark
from splitter.lab.lab import Lab
from splitter.profile import load_profile
from splitter.slicing import slice_model

ROOT = Path(__file__).resolve().parent.parent
BIG_DENSE = (4096, 6144)  # 25 M parameters: ~100 MB, ~200 MB once XNNPACK packs it


@pytest.fixture(scope="module")
def benchy_slices(tmp_path_factory):
    """Convolutions with enough work for a CPU quota to show, and one slice too big for dev1."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((48, 48, 16), name="image")
    x = inputs
    for index in range(3):
        x = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name=f"conv{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(BIG_DENSE[0], name="widen")(x)
    x = keras.layers.Dense(BIG_DENSE[1], name="huge")(x)
    outputs = keras.layers.Dense(10, name="head")(x)
    root = tmp_path_factory.mktemp("benchy")
    keras.Model(inputs, outputs, name="benchy").save(root / "benchy.keras")
    slice_model(root / "benchy.keras", root / "slices")
    return root / "slices"


@pytest.fixture(scope="module")
def profile(lab: Lab, benchy_slices, tmp_path_factory):
    """Benchmark the lab plus one host that cannot be reached: it must not stop the others."""
    work = tmp_path_factory.mktemp("profile")
    inventory = yaml.safe_load(lab.inventory.read_text())
    ssh_args = inventory["all"]["vars"]["ansible_ssh_common_args"] + " -o ConnectTimeout=2"
    ghost = lab.bridge_address.rsplit(".", 1)[0] + ".99"  # in the lab's subnet, nobody there
    hosts = inventory["all"]["children"]["splitter_devices"]["hosts"]
    hosts["ghost"] = {"ansible_host": ghost, "ansible_ssh_common_args": ssh_args}
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory))
    out = work / "profile.json"
    report = run_benchmark(benchy_slices, work / "inventory.yml", [1, 4], out)
    assert list(report.unavailable) == ["ghost"]
    assert report.unavailable["ghost"].startswith("unreachable")
    return load_profile(out), json.loads(out.read_text())


def test_unreachable_host_is_marked_unavailable_in_the_profile(profile):
    _, data = profile
    assert [entry["name"] for entry in data["unavailable"]] == ["ghost"]
    assert "ghost" not in {d["name"] for d in data["devices"]}


def _device(data, name):
    return next(d for d in data["devices"] if d["name"] == name)


def test_profile_covers_every_device_slice_and_link(profile, lab):
    _, data = profile
    names = [d.name for d in lab.devices]
    assert sorted(d["name"] for d in data["devices"]) == names
    count = data["slices"]["count"]
    for device in data["devices"]:
        assert set(device["compute"]) == {"1", "4"}
        for table in device["compute"].values():
            assert len(table["median_ms"]) == count
    pairs = {(link["from"], link["to"]) for link in data["links"]}
    expected = {(a, b) for a in names for b in names if a != b}
    expected |= {("controller", n) for n in names} | {(n, "controller") for n in names}
    assert expected <= pairs
    assert all(link["bandwidth_bytes_per_s"] > 0 for link in data["links"])


def test_memory_limits_decide_what_fits(profile):
    _, data = profile
    huge = next(
        i
        for i, s in enumerate(json.loads((Path(data["slices"]["path"])).read_text())["slices"])
        if s["layers"] == ["huge"]
    )
    dev1, dev3 = _device(data, "dev1"), _device(data, "dev3")
    assert dev1["usable_memory_bytes"] < dev3["usable_memory_bytes"]
    assert dev1["compute"]["1"]["fits"][huge] is False  # 256 MiB device
    assert dev1["compute"]["1"]["median_ms"][huge] is None
    assert dev3["compute"]["1"]["fits"][huge] is True  # 1 GiB device
    assert dev3["compute"]["1"]["median_ms"][huge] > 0


def test_measured_times_order_devices_by_cpu_quota(profile):
    _, data = profile
    convs = [0, 1, 2]  # the convolution slices: compute-bound, same on every device
    total = {
        d["name"]: sum(d["compute"]["4"]["median_ms"][i] for i in convs) for d in data["devices"]
    }
    # dev1 has half a CPU, dev2 and dev3 one each: dev1 must be clearly the slowest.
    assert total["dev1"] > 1.4 * max(total["dev2"], total["dev3"]), total


def test_plain_ansible_playbook_gives_the_same_profile(lab, benchy_slices, profile, tmp_path):
    bundle, results, out = tmp_path / "bundle.tar", tmp_path / "results.json", tmp_path / "p.json"
    cli = str(Path(sys.executable).with_name("splitter"))
    subprocess.run([cli, "benchmark", str(benchy_slices), "--bundle-only", str(bundle)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    from splitter.wheelhouse import default_cache_root

    done = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(lab.inventory),
         "playbooks/benchmark.yml", "-e", f"benchmark_bundle={bundle}",
         "-e", '{"benchmark_batch_sizes": [1]}', "-e", f"benchmark_output={results}",
         "-e", f"runtime_wheelhouse={default_cache_root()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    subprocess.run([cli, "benchmark", str(benchy_slices), "--from-results", str(results),
                    "-o", str(out)], check=True, capture_output=True, timeout=300)  # fmt: skip
    plain = load_profile(out)
    assert sorted(d.name for d in plain.devices) == ["dev1", "dev2", "dev3"]
    data, _, cli_data = json.loads(out.read_text()), *profile
    for name in ("dev1", "dev2", "dev3"):
        plain_device, cli_device = _device(data, name), _device(cli_data, name)
        assert plain_device["compute"]["1"]["fits"] == cli_device["compute"]["1"]["fits"]
        # Usable memory moves with the page cache between runs; the limit behind it does not.
        limit = next(d.memory_bytes for d in lab.devices if d.name == name)
        assert 0 < plain_device["usable_memory_bytes"] < limit


def test_ctrl_c_leaves_no_benchmark_process_on_any_device(lab, benchy_slices, profile, tmp_path):
    """Cancel the run while every device is timing slices: only sshd may be left."""
    import time

    from splitter.ansible_run import run_playbook
    from splitter.benchmark import make_bundle
    from splitter.lab.cgroups import DeviceCgroup
    from splitter.manifest import read_manifest

    bundle = make_bundle(read_manifest(benchy_slices), tmp_path / "bundle.tar")
    began: list[float] = []

    def on_event(event: dict) -> None:
        task = event.get("event_data", {}).get("task", "")
        if event.get("event") == "playbook_on_task_start" and task == "Time every slice":
            began.append(time.monotonic())

    result = run_playbook(
        "benchmark",
        lab.inventory,
        {"benchmark_bundle": str(bundle), "benchmark_batch_sizes": [1, 2, 4, 8, 16, 32],
         "benchmark_install_runtime": False, "runtime_python": "/opt/splitter/venv/bin/python",
         "benchmark_parallel_devices": 0},
        on_event=on_event,
        cancel=lambda: bool(began) and time.monotonic() - began[0] > 2,
    )  # fmt: skip
    assert result.status == "canceled" and began
    deadline = time.monotonic() + 15
    while True:
        left = {
            d.name: [
                command
                for pid in DeviceCgroup(d.cgroup, lab.cgroup_version).pids()
                # sshd itself may keep idle sessions (other runs' persisting SSH masters)
                if (command := _command(pid)) and not command.startswith("sshd:")
            ]
            for d in lab.devices
        }
        if not any(left.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not any(left.values()), left  # nothing but sshd remains: no benchmark process


def _command(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        if stat[2] == "Z":
            return ""
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
