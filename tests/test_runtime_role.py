"""The runtime role on a real lab over real SSH: offline install, idempotence, exact undo.

The lab's devices have no route out, so everything they install comes from the wheels the
controller prepared (splitter.wheelhouse) and the role shipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from splitter.ansible_run import run_playbook
from splitter.facts import gather_facts
from splitter.wheelhouse import prepare_wheelhouse

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NESTED = "/opt/splitter/nested/root"  # dev3's install root: the role creates its parents
WATCHED = ("/opt/splitter", "/var/lib/splitter")


def _ssh(lab, device, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    known_hosts = Path(lab.directory) / "known_hosts"
    return subprocess.run(
        ["ssh", "-i", str(lab.private_key), "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
         f"root@{device.address}", command],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _snapshot(lab, device) -> dict[str, str]:
    """Every path under the watched directories as the device sees them: type, mode, content."""
    done = _ssh(
        lab, device, f"find {' '.join(WATCHED)} -printf '%p %y %m ' -exec sh -c "
        "'[ -f \"$1\" ] && sha256sum < \"$1\" | cut -c1-16 || echo -' _ {} \\;",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def _run(inventory: Path, **extravars: Any) -> tuple[Any, dict[str, int]]:
    """Run playbooks/runtime.yml through ansible-runner; the result and changed count per host."""
    stats: dict[str, int] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "playbook_on_stats":
            data = event["event_data"]
            stats.update({host: data.get("changed", {}).get(host, 0) for host in data["processed"]})

    result = run_playbook("runtime", inventory, extravars, on_event=on_event)
    return result, stats


def _fake_python_without_ensurepip(directory: Path, environment_missing) -> Path:
    """A python3 laid out like Debian's without python3-venv: the stdlib minus ensurepip."""
    real = Path("/usr/bin/python3").resolve()
    version = subprocess.run(
        [str(real), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    stdlib = Path(f"/usr/lib/python{version}")
    if not (stdlib / "os.py").exists():
        environment_missing(f"{real} has no stdlib at {stdlib} to build a python without ensurepip")
    (directory / "bin").mkdir(parents=True)
    lib = directory / "lib" / f"python{version}"
    lib.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name != "ensurepip":
            (lib / entry.name).symlink_to(entry)
    python = directory / "bin" / "python3"
    shutil.copy2(real, python)
    return python


def _tflite_model(path: Path) -> Path:
    """A tiny LiteRT model with a named signature: y = 2x + 1."""
    import tensorflow as tf

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 2.0 + 1.0}

    module = Tiny()
    saved = path.with_suffix(".savedmodel")
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    return path


INFERENCE = """
import sys, numpy as np, zmq, yaml, ai_edge_litert.interpreter, splitter_runtime
from pathlib import Path
from splitter_runtime.backends import LiteRTBackend
out = LiteRTBackend(Path(sys.argv[1]), 1).run({"x": np.ones((2, 4), np.float32)})
assert np.allclose(out["y"], 3.0), out
print(sys.executable, sys.prefix)
"""


def test_runtime_role_installs_offline_idempotently_and_undoes_exactly(
    lab, tmp_path, environment_missing
):
    devices = {d.name: d for d in lab.devices}
    # Files that are not the role's: they must survive the undo untouched.
    for device in lab.devices:
        done = _ssh(lab, device, "echo keep > /opt/splitter/keep.txt && "
                    "echo '{}' > /var/lib/splitter/other.json")  # fmt: skip
        assert done.returncode == 0, done.stderr
    before = {name: _snapshot(lab, d) for name, d in devices.items()}

    inventory = yaml.safe_load(lab.inventory.read_text())
    hosts = inventory["all"]["children"]["splitter_devices"]["hosts"]
    hosts["dev3"]["runtime_install_root"] = NESTED
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory))

    # What deploy does: ask the devices for their Python and architecture, prepare wheels.
    t0 = time.monotonic()
    facts = gather_facts(inv)
    assert facts.unavailable == {}
    kinds = {(f["python"]["version"], f["architecture"]) for f in facts.devices.values()}
    cache = None  # the user's cache (~/.cache/splitter/wheelhouse): CI starts it empty
    for version, arch in kinds:
        wheelhouse = prepare_wheelhouse(version, arch, "litert", cache)
    t_wheels = time.monotonic() - t0
    cache_root = wheelhouse.parent

    # Check mode on fresh devices: reports changes, makes none (plain ansible-playbook).
    done = _playbook_check(inv, f"runtime_wheelhouse={cache_root}")
    for name in devices:
        assert "changed=0" not in _recap(done.stdout, name), done.stdout[-3000:]
        assert _snapshot(lab, devices[name]) == before[name], f"check mode changed {name}"

    # Install, with a fourth inventory host (dev2's address) whose python3 has no ensurepip.
    fake = _fake_python_without_ensurepip(tmp_path / "noensurepip", environment_missing)
    no_venv = subprocess.run([str(fake), "-m", "venv", str(tmp_path / "v")], capture_output=True)
    assert no_venv.returncode != 0  # really cannot make a venv
    broken = yaml.safe_load(inv.read_text())
    broken_hosts = broken["all"]["children"]["splitter_devices"]["hosts"]
    broken_hosts["novenv"] = dict(broken_hosts["dev2"], runtime_system_python=str(fake))
    inv_broken = tmp_path / "inventory-novenv.yml"
    inv_broken.write_text(yaml.safe_dump(broken))
    t0 = time.monotonic()
    result, changed = _run(inv_broken, runtime_wheelhouse=str(cache_root))
    t_install = time.monotonic() - t0
    assert sorted(result.failed_hosts) == ["novenv"], {
        n: h.message for n, h in result.failed_hosts.items()
    }
    message = result.hosts["novenv"].message
    assert message.startswith("novenv:") and "apt-get install python3-venv" in message, message
    assert "ensurepip" in message, message
    assert all(changed.get(name, 0) > 0 for name in devices), changed

    # The venv imports the runtime and LiteRT and runs a tiny model (the model file is read
    # through the shared host filesystem; the devices' install paths are their own).
    model = _tflite_model(tmp_path / "tiny.tflite")
    for name, device in devices.items():
        root = NESTED if name == "dev3" else "/opt/splitter"
        python = f"{root}/venv/bin/python"
        facts_python = result.hosts[name].results["Tell later roles where the runtime's python is"]
        assert facts_python["ansible_facts"]["runtime_python"] == python
        done = _ssh(lab, device, f"{python} -c '{INFERENCE}' {model}")
        assert done.returncode == 0, f"{name}: {done.stderr[-2000:]}"
        assert done.stdout.split()[1] == f"{root}/venv"
        record = json.loads(_ssh(lab, device, "cat /var/lib/splitter/runtime.json").stdout)
        assert record["venv"] == f"{root}/venv"
        assert {"numpy", "pyzmq", "pyyaml", "ai-edge-litert", "splitter-runtime"} <= set(
            record["packages"]
        )
        expected_dirs = ["/opt/splitter/nested", NESTED] if name == "dev3" else []
        assert record["created_dirs"] == expected_dirs
        assert sorted(record["created_trees"]) == [f"{root}/venv", f"{root}/wheels"]

    # Same inputs again: nothing changes, and check mode agrees.
    t0 = time.monotonic()
    result, changed = _run(inv, runtime_wheelhouse=str(cache_root))
    t_second = time.monotonic() - t0
    assert result.failed_hosts == {}
    assert changed == {name: 0 for name in devices}, changed
    done = _playbook_check(inv, f"runtime_wheelhouse={cache_root}")
    assert all("changed=0" in _recap(done.stdout, name) for name in devices), done.stdout[-3000:]

    # The runtime's code changes but not its version: the rebuilt wheel is reinstalled.
    source = tmp_path / "runtime"
    shutil.copytree(
        ROOT / "runtime", source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    init = source / "splitter_runtime" / "__init__.py"
    init.write_text(init.read_text() + "\nREBUILT_FOR_TEST = True\n")
    rebuilt = prepare_wheelhouse(version, arch, "litert", tmp_path / "cache", runtime_dir=source)
    result, changed = _run(inv, runtime_wheelhouse=str(rebuilt.parent))
    assert result.failed_hosts == {} and all(changed[name] > 0 for name in devices), changed
    for name, device in devices.items():
        python = f"{NESTED if name == 'dev3' else '/opt/splitter'}/venv/bin/python"
        done = _ssh(lab, device, f"{python} -c 'import splitter_runtime as r; r.REBUILT_FOR_TEST'")
        assert done.returncode == 0, f"{name}: {done.stderr[-1000:]}"

    # Undo: each device's install paths are as they were before; undo again changes nothing.
    t0 = time.monotonic()
    result, changed = _run(inv, runtime_state="absent")
    t_undo = time.monotonic() - t0
    assert result.failed_hosts == {}
    assert all(changed.get(name, 0) > 0 for name in devices), changed
    for name, device in devices.items():
        assert _snapshot(lab, device) == before[name], f"undo left {name} different"
    result, changed = _run(inv, runtime_state="absent")
    assert result.failed_hosts == {} and changed == {name: 0 for name in devices}, changed

    print(
        f"\nwheels {t_wheels:.1f}s, install {t_install:.1f}s, second run {t_second:.1f}s, "
        f"undo {t_undo:.1f}s"
    )
    for device in lab.devices:
        _ssh(lab, device, "rm -f /opt/splitter/keep.txt /var/lib/splitter/other.json")


def _playbook_check(inventory: Path, extravars: str) -> subprocess.CompletedProcess:
    """Plain ansible-playbook --check (how a user runs it by hand)."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory),
         "playbooks/runtime.yml", "--check", "-e", extravars],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    return done


def _recap(stdout: str, host: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith(f"{host} ") and "ok=" in line]
    assert lines, f"no PLAY RECAP line for {host}"
    return lines[-1]


def test_wheelhouse_rebuilds_only_the_runtime_wheel_when_its_sources_change(tmp_path):
    source = tmp_path / "runtime"
    shutil.copytree(
        ROOT / "runtime", source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    cache = tmp_path / "cache"
    first = prepare_wheelhouse("3.11.2", "x86_64", "litert", cache, runtime_dir=source)
    assert first == cache / "3.11-x86_64-litert"
    manifest = json.loads((first / "wheelhouse.json").read_text())
    assert manifest["runtime_wheel"].startswith("splitter_runtime-")
    assert any(name.startswith("ai_edge_litert-") for name in manifest["wheels"])
    numpy = next(first.glob("numpy-*.whl"))
    assert "manylinux" in numpy.name and "cp311" in numpy.name
    mtime = numpy.stat().st_mtime_ns

    assert prepare_wheelhouse("3.11", "x86_64", "litert", cache, runtime_dir=source) == first
    assert json.loads((first / "wheelhouse.json").read_text()) == manifest  # reused as is

    (source / "splitter_runtime" / "__init__.py").write_text(
        (source / "splitter_runtime" / "__init__.py").read_text() + "\n# changed\n"
    )
    again = prepare_wheelhouse("3.11", "x86_64", "litert", cache, runtime_dir=source)
    changed = json.loads((again / "wheelhouse.json").read_text())
    assert changed["runtime_wheel_sha256"] != manifest["runtime_wheel_sha256"]
    assert changed["wheels"] == manifest["wheels"]
    assert next(again.glob("numpy-*.whl")).stat().st_mtime_ns == mtime  # not downloaded again
    assert not (source / "build").exists()  # built from a copy, never in place
