"""The lab itself: real namespaces, cgroups and sshd, reached over real SSH."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from splitter.errors import SplitterError
from splitter.lab import LabSpec, lab_status
from splitter.lab.spec import parse_size


def ssh(lab, device, command: str) -> str:
    done = subprocess.run(
        [
            "ssh", "-i", str(lab.private_key), "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={Path(lab.directory) / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", f"root@{device.address}", command,
        ],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout


def test_each_device_has_its_own_host_name_limits_and_install_paths(lab):
    seen = set()
    for device in lab.devices:
        assert ssh(lab, device, "hostname").strip() == device.name
        cgroups = ssh(lab, device, "cat /proc/self/cgroup")
        assert f"/splitter-lab/{lab.name}/{device.name}" in cgroups
        ssh(lab, device, f"echo {device.name} > /opt/splitter/owner")
        seen.add(ssh(lab, device, "cat /opt/splitter/owner").strip())
    assert seen == {d.name for d in lab.devices}  # no device sees another's /opt/splitter
    assert not Path("/opt/splitter/owner").exists()  # nor does the host


def test_devices_reach_each_other_over_the_bridge(lab):
    first, second = lab.devices[0], lab.devices[1]
    probe = (
        f"python3 -c \"import socket; s=socket.create_connection(('{second.address}', 22), 3); "
        'print(s.recv(8).decode())"'
    )
    assert ssh(lab, first, probe).startswith("SSH-")


def test_status_reports_every_device_up(lab):
    state = lab_status(lab.name)
    assert state["up"] and [d["name"] for d in state["devices"]] == ["dev1", "dev2", "dev3"]
    assert [d["memory_bytes"] for d in state["devices"]] == [256 << 20, 512 << 20, 1 << 30]


def test_bad_specs_are_clear_errors():
    with pytest.raises(SplitterError, match="one per device"):
        LabSpec(devices=3, memory=(1 << 30, 1 << 30)).validate()
    with pytest.raises(SplitterError, match="1-6 lowercase"):
        LabSpec(name="Bad-Name").validate()
    with pytest.raises(SplitterError, match="tc rate"):
        LabSpec(link="fast").validate()
    with pytest.raises(SplitterError, match="memory size"):
        parse_size("lots")
    assert parse_size("512M") == 512 << 20 and parse_size("1.5G") == 3 << 29


def _leftovers(name: str) -> list[str]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found = [n for n in namespaces.split() if n.startswith(f"spl-{name}-")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [w.rstrip(":") for w in links.split() if w.startswith((f"splbr-{name}", f"spl{name}"))]
    for controller in ("memory", "cpu", ""):
        path = Path("/sys/fs/cgroup") / controller / "splitter-lab" / name
        if path.exists():
            found.append(str(path))
    return found


def test_up_twice_keeps_the_lab_and_down_after_a_crash_removes_everything(require_lab_host):
    from splitter.lab import lab_down, lab_up
    from splitter.lab.lab import STATE_ROOT

    spec = LabSpec(name="crash", devices=2, memory=(128 << 20,), subnet_index=8)
    try:
        first = lab_up(spec)
        again = lab_up(spec)
        assert [d.pid for d in again.devices] == [d.pid for d in first.devices]
        pids = [d.pid for d in first.devices]
        # A crash that lost the state file: down must still find what the lab made.
        (STATE_ROOT / "crash" / "lab.json").unlink()
        assert _leftovers("crash")
    finally:
        lab_down("crash")
    assert _leftovers("crash") == []
    assert not (STATE_ROOT / "crash").exists()
    assert all(not Path(f"/proc/{pid}").exists() or _is_zombie(pid) for pid in pids)
    lab_down("crash")  # idempotent


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
