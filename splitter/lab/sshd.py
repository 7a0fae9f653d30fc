"""Each lab device's sshd: its config, its start inside the device, and waiting for it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from splitter.errors import SplitterError
from splitter.lab.cgroups import DeviceCgroup

if TYPE_CHECKING:
    from splitter.lab.lab import Device, Lab

SSHD = "/usr/sbin/sshd"
INSTALL_PATHS = ("/opt/splitter", "/etc/splitter", "/var/lib/splitter", "/var/log/splitter")
# A device's own copy of the host firewall's config (where the host has ufw): enabling ufw on
# one device then filters that device's namespace only, as on a real machine.
COPIED_PATHS = ("/etc/ufw",)


def sshd_config(lab: Lab, device: Device) -> Path:
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


def start_sshd(lab: Lab, device: Device) -> None:
    """sshd in the device's namespace, mount view, hostname and cgroup."""
    config = sshd_config(lab, device)
    Path("/run/sshd").mkdir(exist_ok=True)
    binds = []
    for path in INSTALL_PATHS:
        if not Path(path).exists():
            Path(path).mkdir(parents=True)
            lab.created_paths.append(path)
        source = Path(device.directory) / "root" / path.strip("/")
        binds.append(f"mount --bind {source} {path}")
    for path in COPIED_PATHS:  # the host's config as a start, then the device's own
        source = Path(device.directory) / "root" / path.strip("/")
        if Path(path).is_dir():
            if not source.exists():
                shutil.copytree(path, source, symlinks=True)
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


def ssh_open(address: str, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_for_ssh(lab: Lab, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(lab.devices)
    while waiting and time.monotonic() < deadline:
        waiting = [d for d in waiting if not ssh_open(d.address)]
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
