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
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from splitter.errors import SplitterError
from splitter.lab.cgroups import DeviceCgroup, cgroup_version

STATE_ROOT = Path(os.environ.get("SPLITTER_LAB_STATE", "/run/splitter-lab"))
INSTALL_PATHS = ("/opt/splitter", "/etc/splitter", "/var/lib/splitter", "/var/log/splitter")
SSHD = "/usr/sbin/sshd"
_NAME = re.compile(r"^[a-z][a-z0-9]{0,5}$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)(i?B?)?$", re.IGNORECASE)
_RATE = re.compile(r"^\d+(?:\.\d+)?(bit|kbit|mbit|gbit)$", re.IGNORECASE)


@dataclass(frozen=True)
class LabSpec:
    """What to build: how many devices, their limits and the link rate."""

    name: str = "lab"
    devices: int = 3
    memory: tuple[int, ...] = (1 << 30,)
    cpus: tuple[float, ...] = (1.0,)
    link: str | None = None
    subnet_index: int = 0  # 10.231.<index>.0/24

    def memory_of(self, index: int) -> int:
        return self.memory[index] if len(self.memory) > 1 else self.memory[0]

    def cpus_of(self, index: int) -> float:
        return self.cpus[index] if len(self.cpus) > 1 else self.cpus[0]

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise SplitterError(
                f"lab name '{self.name}' is not allowed (network names are short)",
                "use 1-6 lowercase letters or digits, starting with a letter",
            )
        if not 1 <= self.devices <= 32:
            raise SplitterError(f"--devices {self.devices} is out of range", "use 1 to 32")
        for option, values in (("--memory", self.memory), ("--cpus", self.cpus)):
            if len(values) not in (1, self.devices):
                raise SplitterError(
                    f"{option} lists {len(values)} values for {self.devices} devices",
                    "give one value for all devices or one per device (comma-separated)",
                )
        if min(self.memory) < 64 << 20:
            raise SplitterError("--memory below 64M leaves no room for sshd", "use 64M or more")
        if min(self.cpus) <= 0:
            raise SplitterError("--cpus must be positive", "e.g. --cpus 0.5,1,1")
        if self.link and not _RATE.match(self.link):
            raise SplitterError(
                f"--link '{self.link}' is not a tc rate", "use e.g. 100mbit, 1gbit, 500kbit"
            )


def parse_size(text: str) -> int:
    """'512M', '1G', '1.5GiB', '1048576' → bytes."""
    match = _SIZE.match(text.strip())
    if not match:
        raise SplitterError(f"'{text}' is not a memory size", "use e.g. 512M, 1G or 2GiB")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit])


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
            _start_sshd(lab, device)
            lab.save()
        _write_inventory(lab)
        _wait_for_ssh(lab)
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


def _sshd_config(lab: Lab, device: Device) -> Path:
    root = Path(device.directory)
    host_key = root / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {device.address}",
                "Port 22",
                f"HostKey {host_key}",
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {Path(lab.directory) / 'authorized_keys'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PrintMotd no",
                "MaxStartups 50",
                "MaxSessions 50",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    return config


def _start_sshd(lab: Lab, device: Device) -> None:
    """sshd in the device's namespace, mount view, hostname and cgroup."""
    config = _sshd_config(lab, device)
    Path("/run/sshd").mkdir(exist_ok=True)
    binds = []
    for path in INSTALL_PATHS:
        if not Path(path).exists():
            Path(path).mkdir(parents=True)
            lab.created_paths.append(path)
        source = Path(device.directory) / "root" / path.strip("/")
        binds.append(f"mount --bind {source} {path}")
    script = " && ".join([f"hostname {device.name}", *binds, f"exec {SSHD} -D -e -f {config}"])
    cgroup = DeviceCgroup(device.cgroup, lab.cgroup_version)
    log = open(Path(device.directory) / "sshd.log", "ab")  # noqa: SIM115 (owned by the child)
    process = subprocess.Popen(
        # nsenter, not `ip netns exec`: the latter remounts /sys, which would hide the
        # device's own cgroup from the facts module.
        ["nsenter", f"--net=/run/netns/{device.namespace}", "unshare", "--mount", "--uts",
         "--propagation", "private", "sh", "-c", script],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        preexec_fn=lambda: cgroup.join(os.getpid()),
    )  # fmt: skip
    log.close()
    device.pid = process.pid


def _write_inventory(lab: Lab) -> None:
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


def _ssh_open(address: str, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _wait_for_ssh(lab: Lab, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(lab.devices)
    while waiting and time.monotonic() < deadline:
        waiting = [d for d in waiting if not _ssh_open(d.address)]
        if waiting:
            time.sleep(0.1)
    if waiting:
        logs = "; ".join(
            f"{d.name}: {(Path(d.directory) / 'sshd.log').read_text()[-200:].strip()}"
            for d in waiting
        )
        raise SplitterError(
            f"sshd did not come up on {', '.join(d.name for d in waiting)} ({logs})",
            "check that openssh-server is installed and that no firewall blocks 10.231.0.0/16",
        )


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
                "ssh": alive and _ssh_open(device.address),
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
