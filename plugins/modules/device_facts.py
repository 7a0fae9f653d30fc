#!/usr/bin/python
# Copyright: splitter developers
# Apache License 2.0 (see LICENSE)
"""Ansible module: what a device can give a pipeline stage (memory, CPUs, accelerators)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: device_facts
short_description: Gather what a device can offer a splitter pipeline stage
version_added: "1.0.0"
description:
  - Reports total and available memory, the cgroup memory limit (cgroup v1 and v2) and the
    usable memory that follows from both, CPU count and cgroup CPU quota (effective CPUs),
    architecture, accelerators (via C(nvidia-smi) where present), free disk at the install
    root, the Python version and whether systemd runs.
  - Unlike M(ansible.builtin.setup), memory accounts for cgroup limits and uses
    MemAvailable rather than MemFree, so a container or a small board is not overrated.
  - Uses only the Python standard library on the device.
author:
  - splitter developers
options:
  install_root:
    description:
      - Where the splitter runtime lives (or will live) on the device; free disk is measured
        at this path or its nearest existing parent.
    type: path
    default: /opt/splitter
  memory_margin:
    description:
      - Fraction of the smaller of available RAM and the cgroup headroom kept free for the
        operating system and other processes; the rest is reported as usable.
    type: float
    default: 0.1
attributes:
  check_mode:
    support: full
    details: This module only reads.
  diff_mode:
    support: none
  facts:
    support: full
notes:
  - Reads C(/proc/meminfo), C(/proc/self/cgroup) and C(/sys/fs/cgroup); works unprivileged.
"""

EXAMPLES = r"""
- name: Gather device facts
  splitter.pipeline.device_facts:

- name: Keep 25% of memory free and measure disk where the runtime will be installed
  splitter.pipeline.device_facts:
    install_root: /srv/splitter
    memory_margin: 0.25

- name: Show usable memory
  ansible.builtin.debug:
    msg: "{{ ansible_facts['splitter_device']['memory']['usable_bytes'] }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added under the key C(splitter_device).
  returned: always
  type: dict
  contains:
    splitter_device:
      description: The device's resources.
      type: dict
      contains:
        hostname:
          description: The device's host name.
          type: str
          sample: pi-2
        memory:
          description: >-
            Memory in bytes - C(total), C(available) (MemAvailable), C(cgroup_limit) (null
            when unlimited), C(cgroup_usage), C(cgroup_reclaimable), C(cgroup_headroom),
            C(usable_bytes) and C(margin).
          type: dict
          sample: {"total": 25220000000, "available": 24000000000, "cgroup_limit": 536870912,
                   "usable_bytes": 470000000}
        cpu:
          description: >-
            C(count) (online CPUs), C(affinity) (CPUs this process may use), C(quota) (CPUs
            allowed by the cgroup quota, null when unlimited) and C(effective) (the smallest).
          type: dict
          sample: {"count": 2, "affinity": 2, "quota": 0.5, "effective": 0.5}
        cgroup:
          description: The cgroup version (1 or 2) and the memory and cpu group paths.
          type: dict
        architecture:
          description: Machine architecture.
          type: str
          sample: x86_64
        accelerators:
          description: GPUs found by nvidia-smi (name, memory_bytes); empty when none.
          type: list
          elements: dict
        disk:
          description: C(path) measured and C(free_bytes) there.
          type: dict
        python:
          description: C(version) and C(executable) of the interpreter running the module.
          type: dict
        systemd:
          description: Whether systemd is the running init system.
          type: bool
        controller_address:
          description: >-
            The controller's address as this device sees it (from the SSH connection);
            127.0.0.1 for a local connection.
          type: str
"""

import os
import platform
import socket
import sys

from ansible.module_utils.basic import AnsibleModule

CGROUP_ROOT = "/sys/fs/cgroup"
UNLIMITED_V1 = 1 << 60  # v1 reports "no limit" as a page-rounded LONG_MAX


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def meminfo():
    values = {}
    for line in (read_text("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0]) * 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", values.get("MemFree", 0))


def own_cgroups():
    """Map controller -> path for this process, and the hierarchy version."""
    version = 2 if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")) else 1
    paths = {}
    for line in (read_text("/proc/self/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        if version == 2 and controllers == "":
            paths["unified"] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return version, paths


def ancestors(base, path):
    """The group directory and every parent up to the hierarchy root (deepest first)."""
    parts = [p for p in path.split("/") if p]
    found = []
    for depth in range(len(parts), -1, -1):
        directory = os.path.join(base, *parts[:depth])
        if os.path.isdir(directory):
            found.append(directory)
    return found


def number(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def stat_value(directory, key):
    for line in (read_text(os.path.join(directory, "memory.stat")) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return number(value) or 0
    return 0


def cgroup_memory(version, paths):
    """(limit, usage, reclaimable) of the tightest group above this process, or Nones."""
    if version == 2:
        groups = ancestors(CGROUP_ROOT, paths.get("unified", "/"))
        limit_file, usage_file, reclaim_key = "memory.max", "memory.current", "inactive_file"
    else:
        groups = ancestors(os.path.join(CGROUP_ROOT, "memory"), paths.get("memory", "/"))
        limit_file = "memory.limit_in_bytes"
        usage_file, reclaim_key = "memory.usage_in_bytes", "total_inactive_file"
    best = None
    for directory in groups:
        limit = number(read_text(os.path.join(directory, limit_file)))
        if limit is None or limit >= UNLIMITED_V1:
            continue
        usage = number(read_text(os.path.join(directory, usage_file))) or 0
        reclaimable = stat_value(directory, reclaim_key)
        headroom = limit - max(0, usage - reclaimable)
        if best is None or headroom < best[3]:
            best = (limit, usage, reclaimable, headroom)
    return best


def cgroup_cpu_quota(version, paths):
    """CPUs allowed by the tightest CFS quota above this process, or None."""
    quotas = []
    if version == 2:
        for directory in ancestors(CGROUP_ROOT, paths.get("unified", "/")):
            text = read_text(os.path.join(directory, "cpu.max"))
            if text and not text.startswith("max"):
                quota, period = (number(v) for v in text.split()[:2])
                if quota and period:
                    quotas.append(quota / period)
    else:
        controller = "cpu" if "cpu" in paths else "cpu,cpuacct"
        base = os.path.join(CGROUP_ROOT, controller)
        if not os.path.isdir(base):
            base = os.path.join(CGROUP_ROOT, "cpu,cpuacct")
        for directory in ancestors(base, paths.get("cpu", "/")):
            quota = number(read_text(os.path.join(directory, "cpu.cfs_quota_us")))
            period = number(read_text(os.path.join(directory, "cpu.cfs_period_us")))
            if quota and quota > 0 and period:
                quotas.append(quota / period)
    return min(quotas) if quotas else None


def accelerators(module):
    smi = module.get_bin_path("nvidia-smi")
    if not smi:
        return []
    rc, out, _ = module.run_command(
        [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
    )
    if rc != 0:
        return []
    found = []
    for line in out.strip().splitlines():
        name, _, memory = line.rpartition(",")
        found.append({"name": name.strip(), "memory_bytes": (number(memory.strip()) or 0) << 20})
    return found


def disk_free(path):
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe.rstrip("/")) or "/"
    stats = os.statvfs(probe)
    return {"path": probe, "free_bytes": stats.f_bavail * stats.f_frsize}


def gather(module):
    margin = module.params["memory_margin"]
    if not 0 <= margin < 1:
        module.fail_json(msg=f"memory_margin must be in [0, 1), got {margin}")
    total, available = meminfo()
    version, paths = own_cgroups()
    memory = cgroup_memory(version, paths)
    limit = usage = reclaimable = headroom = None
    if memory:
        limit, usage, reclaimable, headroom = memory
    ceiling = min(available, headroom) if headroom is not None else available
    count = os.cpu_count() or 1
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else count
    quota = cgroup_cpu_quota(version, paths)
    effective = min(affinity, quota) if quota else affinity
    return {
        "hostname": socket.gethostname(),
        "memory": {
            "total": total,
            "available": available,
            "cgroup_limit": limit,
            "cgroup_usage": usage,
            "cgroup_reclaimable": reclaimable,
            "cgroup_headroom": headroom,
            "margin": margin,
            "usable_bytes": max(0, int(ceiling * (1 - margin))),
        },
        "cpu": {"count": count, "affinity": affinity, "quota": quota, "effective": effective},
        "cgroup": {
            "version": version,
            "memory_path": paths.get("unified" if version == 2 else "memory"),
            "cpu_path": paths.get("unified" if version == 2 else "cpu"),
        },
        "architecture": platform.machine(),
        "accelerators": accelerators(module),
        "disk": disk_free(module.params["install_root"]),
        "python": {
            "version": ".".join(str(v) for v in sys.version_info[:3]),
            "executable": sys.executable,
        },
        "systemd": os.path.isdir("/run/systemd/system"),
        "controller_address": (os.environ.get("SSH_CLIENT") or "127.0.0.1").split()[0],
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "install_root": {"type": "path", "default": "/opt/splitter"},
            "memory_margin": {"type": "float", "default": 0.1},
        },
        supports_check_mode=True,
    )
    module.run_command_environ_update = {"LANG": "C", "LC_ALL": "C"}
    facts = gather(module)
    module.exit_json(changed=False, ansible_facts={"splitter_device": facts})


if __name__ == "__main__":
    main()
