"""Memory and CPU limits for a lab device, on cgroup v1 (this machine) or v2.

Each device gets its own group; every process started in it (sshd, Ansible modules, stage
services) inherits the limit, which is what the facts module must then discover.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
# A short CFS period makes a quota bite at the time scale of one slice measurement (a few
# milliseconds), as a slower CPU would; with the default 100 ms a short burst runs unthrottled.
CFS_PERIOD_US = 10_000


def cgroup_version() -> int:
    """2 when the unified hierarchy is mounted at /sys/fs/cgroup, else 1."""
    return 2 if (ROOT / "cgroup.controllers").exists() else 1


@dataclass(frozen=True)
class DeviceCgroup:
    """The group directories one device owns (one per v1 controller, or one on v2)."""

    relative: str  # e.g. "splitter-lab/lab/dev1"
    version: int

    @property
    def directories(self) -> list[Path]:
        if self.version == 2:
            return [ROOT / self.relative]
        return [ROOT / "memory" / self.relative, ROOT / "cpu" / self.relative]

    def create(self, memory_bytes: int, cpus: float) -> None:
        if self.version == 2:
            _enable_v2_controllers(self.relative)
        for directory in self.directories:
            directory.mkdir(parents=True, exist_ok=True)
        quota = max(1000, int(cpus * CFS_PERIOD_US))
        if self.version == 2:
            group = ROOT / self.relative
            (group / "memory.max").write_text(str(memory_bytes))
            swap = group / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
            (group / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
        else:
            memory, cpu = self.directories
            (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (cpu / "cpu.cfs_quota_us").write_text(str(quota))

    def join(self, pid: int) -> None:
        """Move ``pid`` into every group of this device."""
        for directory in self.directories:
            (directory / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self.directories:
            procs = directory / "cgroup.procs"
            if procs.exists():
                found |= {int(line) for line in procs.read_text().split() if line.strip()}
        return found

    def kill_all(self, timeout: float = 5.0) -> None:
        """End every process in the group (all of them were started by the lab)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.pids():
                return

    def remove(self) -> None:
        self.kill_all()
        for directory in self.directories:
            _rmdir_tree(directory)


def _enable_v2_controllers(relative: str) -> None:
    """Turn on memory and cpu for every level above the device's group."""
    current = ROOT
    for part in Path(relative).parts:
        control = current / "cgroup.subtree_control"
        with contextlib.suppress(OSError):
            control.write_text("+memory +cpu")
        current = current / part
        current.mkdir(exist_ok=True)


def _rmdir_tree(directory: Path) -> None:
    """cgroup directories are removed bottom-up with rmdir (their files cannot be deleted)."""
    if not directory.exists():
        return
    for child in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        directory.rmdir()
