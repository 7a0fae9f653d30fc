#!/usr/bin/python
# Copyright: splitter developers
# Apache License 2.0 (see LICENSE)
"""Ansible module: choose listening ports for a stage, so the user never picks one."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: free_ports
short_description: Choose free TCP ports for splitter services on a device
version_added: "1.0.0"
description:
  - Returns I(count) distinct ports that can be bound on I(bind_address) now, chosen below the
    kernel's ephemeral port range (so no outgoing connection can take them first).
  - Ports in I(prefer) are returned again when they are still free, or when the process
    listening on them is the service itself (its command line contains I(owner_match)); so
    a second deploy keeps the ports of the stages it does not restart.
  - Reads C(/proc); uses only the Python standard library. Changes nothing on the device.
author:
  - splitter developers
options:
  count:
    description: How many ports are needed.
    type: int
    required: true
  bind_address:
    description: The address the service will bind; ports are checked free there.
    type: str
    default: 0.0.0.0
  prefer:
    description: Ports to keep when they are still usable (the previous deployment's).
    type: list
    elements: int
    default: []
  owner_match:
    description:
      - A string in the command line of the process allowed to hold a preferred port (the
        service's config path). Empty means a preferred port must be free.
    type: str
    default: ""
  lowest:
    description: The lowest port to choose.
    type: int
    default: 20000
attributes:
  check_mode:
    support: full
    details: This module only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Choose the data and health ports of a stage
  splitter.pipeline.free_ports:
    count: 2
    bind_address: 10.0.0.2
    prefer: [20311, 20312]
    owner_match: /etc/splitter/demo/s0-pi1.yaml
  register: ports

- name: Use them
  ansible.builtin.debug:
    msg: "data port {{ ports.ports[0] }}, health port {{ ports.ports[1] }}"
"""

RETURN = r"""
ports:
  description: The chosen ports, in the order asked for (preferred ones kept in place).
  returned: always
  type: list
  elements: int
  sample: [20311, 20312]
kept:
  description: How many of I(prefer) were kept.
  returned: always
  type: int
  sample: 2
"""

import os
import random
import socket

from ansible.module_utils.basic import AnsibleModule


def ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bindable(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def listening_inodes(port: int) -> set[str]:
    """Inodes of sockets listening on ``port`` (state 0A in /proc/net/tcp and tcp6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            listening = len(fields) > 9 and fields[3] == "0A"
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def held_by(port: int, owner_match: str) -> bool:
    """True when a process whose command line contains ``owner_match`` listens on ``port``."""
    inodes = listening_inodes(port)
    if not inodes or not owner_match:
        return False
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            if owner_match not in cmdline:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return True
        except OSError:
            continue
    return False


def choose(params: dict) -> tuple[list[int], int]:
    """Position i keeps prefer[i] when usable; every other position gets a new free port."""
    count, address, prefer = params["count"], params["bind_address"], params["prefer"]
    low, high = params["lowest"], ephemeral_low()
    if high - low < 4 * count:
        low, high = 61000, 65535
    chosen: list[int | None] = [None] * count
    for i, port in enumerate(prefer[:count]):
        if port not in chosen and (bindable(address, port) or held_by(port, params["owner_match"])):
            chosen[i] = port
    kept = sum(port is not None for port in chosen)
    rng = random.Random()
    for i in range(count):
        for _ in range(200):
            if chosen[i] is not None:
                break
            port = rng.randrange(low, high)
            if port not in chosen and port not in prefer and bindable(address, port):
                chosen[i] = port
        if chosen[i] is None:
            raise OSError(f"no free port in {low}-{high} on {address}")
    return [int(port) for port in chosen if port is not None], kept


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "count": {"type": "int", "required": True},
            "bind_address": {"type": "str", "default": "0.0.0.0"},
            "prefer": {"type": "list", "elements": "int", "default": []},
            "owner_match": {"type": "str", "default": ""},
            "lowest": {"type": "int", "default": 20000},
        },
        supports_check_mode=True,
    )
    if module.params["count"] < 1:
        module.fail_json(msg="count must be at least 1")
    try:
        ports, kept = choose(module.params)
    except OSError as error:
        module.fail_json(
            msg=f"{error}. Fix: stop services holding ports on this device, or lower `lowest`."
        )
    module.exit_json(changed=False, ports=ports, kept=kept)


if __name__ == "__main__":
    main()
