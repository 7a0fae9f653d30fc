"""The Ansible inventory and known_hosts a lab writes for its devices."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from splitter.lab.lab import Lab


def write_inventory(lab: Lab) -> None:
    known_hosts = Path(lab.directory) / "known_hosts"
    lines = []
    for device in lab.devices:
        key = (Path(device.directory) / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{device.address} {key[0]} {key[1]}")
    known_hosts.write_text("\n".join(lines) + "\n")
    inventory = {
        "all": {
            "children": {
                "splitter_devices": {
                    "hosts": {
                        d.name: {
                            "ansible_host": d.address,
                            "splitter_lab_memory_bytes": d.memory_bytes,
                            "splitter_lab_cpus": d.cpus,
                        }
                        for d in lab.devices
                    }
                }
            },
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(lab.private_key),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
                ),
                "ansible_python_interpreter": "/usr/bin/python3",
                "splitter_lab": lab.name,
                # The lab's devices share this machine's CPUs: they must measure in turn.
                "benchmark_parallel_devices": 1,
            },
        }
    }
    lab.inventory.write_text(
        f"# Written by `splitter lab up` for lab '{lab.name}'; removed by `splitter lab down`.\n"
        + yaml.safe_dump(inventory, sort_keys=False)
    )
