"""Build, inspect and remove a lab of test devices (namespaces + cgroups + sshd).

Everything the lab makes is recorded in its state file as it is made, and every name
carries the lab's prefix, so ``lab down`` removes exactly what ``lab up`` created — also
after a crash half-way through ``up``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from splitter.errors import SplitterError
from splitter.lab.cgroups import DeviceCgroup, cgroup_version
from splitter.lab.inventory import write_inventory
from splitter.lab.spec import LabSpec
from splitter.lab.sshd import INSTALL_PATHS, SSHD, ssh_open, start_sshd, wait_for_ssh

STATE_ROOT = Path(os.environ.get("SPLITTER_LAB_STATE", "/run/splitter-lab"))


@dataclass
class Device:
    """One lab device as recorded in the state file."""

    name: str
    namespace: str
    address: str
    host_veth: str
    memory_bytes: int
    cpus: float
    cgroup: str
    directory: str
    pid: int | None = None


@dataclass
class Lab:
    """A lab's recorded state: what exists, where its keys and inventory are."""

    name: str
    directory: str
    bridge: str
    bridge_address: str
    cgroup_version: int
    link: str | None
    devices: list[Device] = field(default_factory=list)
    created_paths: list[str] = field(default_factory=list)

    @property
    def inventory(self) -> Path:
        return Path(self.directory) / "inventory.yml"

    @property
    def private_key(self) -> Path:
        return Path(self.directory) / "id_ed25519"

    def save(self) -> None:
        path = Path(self.directory) / "lab.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, name: str) -> Lab | None:
        path = STATE_ROOT / name / "lab.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["devices"] = [Device(**d) for d in data["devices"]]
        return cls(**data)


def _require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise SplitterError(
            f"`splitter lab {action}` needs root (network namespaces, cgroups, sshd)",
            "run it as root (sudo); the lab's devices are namespaces and cgroups",
        )
    if not Path(SSHD).exists():
        raise SplitterError(
            f"{SSHD} is missing: the lab's devices are reached over real SSH",
            "install it: apt-get install -y openssh-server",
        )


def _run(*args: str, check: bool = True, namespace: str | None = None) -> str:
    command = ["ip", "netns", "exec", namespace, *args] if namespace else list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise SplitterError(
            f"lab command failed: {' '.join(command)}: {done.stderr.strip()[:300]}",
            "run `splitter lab down` to clean up, then try again",
        )
    return done.stdout


def lab_up(spec: LabSpec) -> Lab:
    """Build the lab described by ``spec``; an identical lab already up is returned as is."""
    spec.validate()
    _require_root("up")
    existing = Lab.load(spec.name)
    if existing is not None:
        if _matches(existing, spec) and all(s["ssh"] for s in lab_status(spec.name)["devices"]):
            return existing
        lab_down(spec.name)
    _remove_leftovers(spec.name)
    directory = STATE_ROOT / spec.name
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    subnet = f"10.231.{spec.subnet_index}"
    lab = Lab(
        name=spec.name,
        directory=str(directory),
        bridge=f"splbr-{spec.name}",
        bridge_address=f"{subnet}.1",
        cgroup_version=cgroup_version(),
        link=spec.link,
    )
    lab.save()
    try:
        _make_keys(lab)
        _make_bridge(lab)
        for index in range(spec.devices):
            device = _make_device(lab, spec, index, subnet)
            lab.devices.append(device)
            lab.save()
            start_sshd(lab, device)
            lab.save()
        write_inventory(lab)
        wait_for_ssh(lab)
    except BaseException:
        lab_down(spec.name)
        raise
    return lab


def _matches(lab: Lab, spec: LabSpec) -> bool:
    return (
        len(lab.devices) == spec.devices
        and lab.link == spec.link
        and all(
            d.memory_bytes == spec.memory_of(i) and d.cpus == spec.cpus_of(i)
            for i, d in enumerate(lab.devices)
        )
    )


def _make_keys(lab: Lab) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"splitter-lab-{lab.name}",
         "-f", str(lab.private_key)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    shutil.copy(f"{lab.private_key}.pub", Path(lab.directory) / "authorized_keys")


def _make_bridge(lab: Lab) -> None:
    _run("ip", "link", "add", lab.bridge, "type", "bridge")
    _run("ip", "addr", "add", f"{lab.bridge_address}/24", "dev", lab.bridge)
    _run("ip", "link", "set", lab.bridge, "up")


def _make_device(lab: Lab, spec: LabSpec, index: int, subnet: str) -> Device:
    name = f"dev{index + 1}"
    device = Device(
        name=name,
        namespace=f"spl-{lab.name}-{name}",
        address=f"{subnet}.{11 + index}",
        host_veth=f"spl{lab.name}{index + 1}",
        memory_bytes=spec.memory_of(index),
        cpus=spec.cpus_of(index),
        cgroup=f"splitter-lab/{lab.name}/{name}",
        directory=str(Path(lab.directory) / "devices" / name),
    )
    root = Path(device.directory)
    for path in INSTALL_PATHS:
        (root / "root" / path.strip("/")).mkdir(parents=True, exist_ok=True)
    _run("ip", "netns", "add", device.namespace)
    peer = f"{device.host_veth}p"
    _run("ip", "link", "add", device.host_veth, "type", "veth", "peer", "name", peer)
    _run("ip", "link", "set", peer, "netns", device.namespace)
    _run("ip", "link", "set", device.host_veth, "master", lab.bridge)
    _run("ip", "link", "set", device.host_veth, "up")
    _run("ip", "link", "set", "lo", "up", namespace=device.namespace)
    _run("ip", "link", "set", peer, "name", "eth0", namespace=device.namespace)
    _run("ip", "addr", "add", f"{device.address}/24", "dev", "eth0", namespace=device.namespace)
    _run("ip", "link", "set", "eth0", "up", namespace=device.namespace)
    if lab.link:
        shape = ["tbf", "rate", lab.link, "burst", "64kb", "latency", "100ms"]
        _run("tc", "qdisc", "replace", "dev", device.host_veth, "root", *shape)
        _run("tc", "qdisc", "replace", "dev", "eth0", "root", *shape, namespace=device.namespace)
    DeviceCgroup(device.cgroup, lab.cgroup_version).create(device.memory_bytes, device.cpus)
    return device


def lab_status(name: str = "lab") -> dict[str, Any]:
    """What the state file records and whether each device's sshd answers."""
    lab = Lab.load(name)
    if lab is None:
        return {"name": name, "up": False, "devices": []}
    devices = []
    for device in lab.devices:
        alive = device.pid is not None and Path(f"/proc/{device.pid}").exists()
        devices.append(
            {
                "name": device.name,
                "address": device.address,
                "memory_bytes": device.memory_bytes,
                "cpus": device.cpus,
                "sshd_pid": device.pid,
                "alive": alive,
                "ssh": alive and ssh_open(device.address),
            }
        )
    return {
        "name": name,
        "up": bool(devices) and all(d["ssh"] for d in devices),
        "inventory": str(lab.inventory),
        "devices": devices,
    }


def lab_down(name: str = "lab") -> list[str]:
    """Remove everything the lab made; safe to run twice and after a crash."""
    _require_root("down")
    removed: list[str] = []
    lab = Lab.load(name)
    if lab is not None:
        for device in lab.devices:
            DeviceCgroup(device.cgroup, lab.cgroup_version).remove()
            _reap(device.pid)
            removed.append(device.name)
        for path in reversed(lab.created_paths):
            with contextlib.suppress(OSError):
                Path(path).rmdir()  # only if still empty: never remove what others put there
    removed += _remove_leftovers(name)
    shutil.rmtree(STATE_ROOT / name, ignore_errors=True)
    return removed


def _reap(pid: int | None) -> None:
    """Collect an sshd we started in this process, so no zombie is left behind."""
    if pid is None:
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _remove_leftovers(name: str) -> list[str]:
    """Namespaces, links and cgroups with this lab's prefix, even without a state file."""
    removed = []
    version = cgroup_version()
    base = "splitter-lab"
    roots = (
        [Path("/sys/fs/cgroup") / base / name]
        if version == 2
        else [Path("/sys/fs/cgroup") / c / base / name for c in ("memory", "cpu")]
    )
    for root in roots:
        if root.exists():
            for child in root.iterdir():
                if child.is_dir():
                    DeviceCgroup(f"{base}/{name}/{child.name}", version).remove()
            for empty in (root, root.parent):  # .../splitter-lab/<name>, then .../splitter-lab
                with contextlib.suppress(OSError):
                    empty.rmdir()
    namespaces = _run("ip", "netns", "list", check=False).split()
    for namespace in namespaces:
        if namespace.startswith(f"spl-{name}-"):
            for pid in _run("ip", "netns", "pids", namespace, check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            _run("ip", "netns", "del", namespace, check=False)
            removed.append(namespace)
    links = _run("ip", "-o", "link", "show", check=False)
    for match in re.finditer(r"^\d+: ([^:@]+)", links, re.MULTILINE):
        link = match.group(1)
        if link == f"splbr-{name}" or re.fullmatch(rf"spl{name}\d+", link):
            _run("ip", "link", "del", link, check=False)
            removed.append(link)
    return removed
