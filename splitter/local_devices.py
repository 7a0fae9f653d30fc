"""Local devices: the embedded default where a lab cannot be built (no root, no sshd).

Each "device" is this machine reached with Ansible's local connection, with its own install
roots under one folder (so two devices never share a runtime, configs or records), all at
127.0.0.1. They share this machine's CPUs and memory: good for trying the whole flow, not for
measuring a split (the lab, with cgroup limits and its own addresses, is for that).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

ROOTS = {
    "runtime_install_root": "opt",
    "facts_install_root": "opt",
    "runtime_state_root": "var/lib",
    "stage_state_root": "var/lib",
    "stage_config_root": "etc",
    "stage_log_root": "var/log",
}


def system_python() -> str:
    """The python3 that makes each device's virtual environment (not this venv's)."""
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if candidate and Path(candidate).exists() and not candidate.startswith(sys.prefix):
            return candidate
    return sys.executable


def write_local_inventory(directory: Path | str, count: int = 3) -> Path:
    """Write an inventory of ``count`` local devices under ``directory``; return its path."""
    directory = Path(directory).resolve()
    hosts = {}
    for i in range(1, count + 1):
        name = f"local{i}"
        root = directory / "devices" / name
        variables = {key: str(root / sub) for key, sub in ROOTS.items()}
        variables["benchmark_work_dir"] = str(root / "var/lib/benchmark")
        hosts[name] = {"ansible_host": "127.0.0.1", **variables}
    inventory = {
        "all": {
            "children": {"splitter_devices": {"hosts": hosts}},
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": system_python(),
                # they share this machine's CPUs: measure in turn
                "benchmark_parallel_devices": 1,
            },
        }
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "inventory.yml"
    path.write_text(
        "# Local devices written by splitter.local_devices (the default without a lab).\n"
        + yaml.safe_dump(inventory, sort_keys=False)
    )
    return path


def remove_local_devices(directory: Path | str) -> None:
    """Remove the devices' folders (after `splitter undo`, nothing of splitter is left there)."""
    shutil.rmtree(Path(directory), ignore_errors=True)
