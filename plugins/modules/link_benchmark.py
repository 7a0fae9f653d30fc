#!/usr/bin/python
# Copyright: splitter developers
# Apache License 2.0 (see LICENSE)
"""Ansible module: measure latency and bandwidth of the links between devices."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: link_benchmark
short_description: Measure latency and bandwidth between splitter devices
version_added: "1.0.0"
description:
  - C(state=serving) starts a small TCP measurement server in the background on a free port
    and returns the port; it stops by itself after I(idle_timeout_s) without traffic (or
    I(max_duration_s)), or when C(state=stopped) is called for its port.
  - C(state=probed) measures every target - latency as half the median round trip of
    one-byte messages, bandwidth as bytes per second of a bulk transfer - one target at a
    time, and returns the figures.
  - Uses only the Python standard library.
author:
  - splitter developers
options:
  state:
    description: Start a server, probe targets, or stop a server.
    type: str
    choices: [serving, probed, stopped]
    required: true
  bind_address:
    description: Address the server listens on (C(state=serving)).
    type: str
    default: 0.0.0.0
  port:
    description: The server's port (C(state=stopped)).
    type: int
  address:
    description: Where the server to stop listens (C(state=stopped)).
    type: str
    default: 127.0.0.1
  targets:
    description: Servers to measure (C(state=probed)), each with C(name), C(address), C(port).
    type: list
    elements: dict
    default: []
  bulk_bytes:
    description: Bytes sent per bandwidth measurement.
    type: int
    default: 4194304
  rounds:
    description: Round trips for latency; bandwidth takes the best of three bulk transfers.
    type: int
    default: 30
  idle_timeout_s:
    description: A server with no connection for this long exits.
    type: float
    default: 30
  max_duration_s:
    description: A server exits after this long in any case.
    type: float
    default: 600
  timeout_s:
    description: Connect and transfer timeout per target (C(state=probed)).
    type: float
    default: 20
attributes:
  check_mode:
    support: full
    details: Starts, measures and stops nothing in check mode.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Start a measurement server on every device
  splitter.pipeline.link_benchmark:
    state: serving
  register: __server

- name: Measure every other device
  splitter.pipeline.link_benchmark:
    state: probed
    targets:
      - {name: dev2, address: 10.231.0.12, port: "{{ hostvars['dev2']['__server']['port'] }}"}
"""

RETURN = r"""
port:
  description: The server's port (C(state=serving)).
  returned: when state is serving
  type: int
pid:
  description: The server's process id (C(state=serving)).
  returned: when state is serving
  type: int
links:
  description: Per target C(to), C(latency_ms), C(bandwidth_bytes_per_s) (or C(error)).
  returned: when state is probed
  type: list
  elements: dict
"""

import contextlib
import os
import select
import socket
import struct
import threading
import time

from ansible.module_utils.basic import AnsibleModule

PING = b"P"
BULK = b"B"
QUIT = b"Q"


def serve_forever(listener, idle_timeout, max_duration):
    """Answer pings and bulk transfers until idle or told to quit (runs in the daemon)."""
    state = {"last": time.monotonic(), "active": 0, "quit": False}
    started = time.monotonic()

    def handle(conn):
        state["active"] += 1
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                kind = conn.recv(1)
                if not kind:
                    return
                state["last"] = time.monotonic()
                if kind == PING:
                    conn.sendall(PING)
                elif kind == BULK:
                    (remaining,) = struct.unpack("!Q", _recv_exact(conn, 8))
                    while remaining:
                        chunk = conn.recv(min(remaining, 1 << 20))
                        if not chunk:
                            return
                        remaining -= len(chunk)
                    conn.sendall(BULK)
                elif kind == QUIT:
                    state["quit"] = True
                    return
        except OSError:
            return
        finally:
            state["active"] -= 1
            state["last"] = time.monotonic()
            conn.close()

    listener.settimeout(0.2)
    while not state["quit"]:
        now = time.monotonic()
        if now - started > max_duration:
            break
        if state["active"] == 0 and now - state["last"] > idle_timeout:
            break
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            break
        threading.Thread(target=handle, args=(conn,), daemon=True).start()
    listener.close()


def _recv_exact(conn, size):
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def start_server(module):
    """Fork a detached server; the module returns its port once it listens."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((module.params["bind_address"], 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork():  # second fork: not a session leader, reparented, no zombie
            os._exit(0)
        os.close(read_end)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.write(write_end, str(os.getpid()).encode())
        os.close(write_end)
        try:
            serve_forever(
                listener, module.params["idle_timeout_s"], module.params["max_duration_s"]
            )
        finally:
            os._exit(0)
    os.close(write_end)
    listener.close()
    os.waitpid(pid, 0)
    ready, _, _ = select.select([read_end], [], [], 10)
    server_pid = int(os.read(read_end, 32) or b"0") if ready else 0
    os.close(read_end)
    if not server_pid:
        module.fail_json(msg="the link measurement server did not start")
    return port, server_pid


def probe(target, bulk_bytes, rounds, timeout):
    address, port = target["address"], int(target["port"])
    with socket.create_connection((address, port), timeout=timeout) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(timeout)
        trips = []
        for _ in range(rounds + 3):
            tick = time.perf_counter()
            conn.sendall(PING)
            _recv_exact(conn, 1)
            trips.append(time.perf_counter() - tick)
        trips = sorted(trips[3:])  # the first trips pay for slow start and caches
        payload = b"\0" * bulk_bytes
        best = 0.0
        for _ in range(3):
            tick = time.perf_counter()
            conn.sendall(BULK + struct.pack("!Q", bulk_bytes))
            conn.sendall(payload)
            _recv_exact(conn, 1)
            elapsed = time.perf_counter() - tick - trips[len(trips) // 2]
            best = max(best, bulk_bytes / max(elapsed, 1e-6))
    return {
        "to": target["name"],
        "latency_ms": round(trips[len(trips) // 2] / 2 * 1000, 4),
        "bandwidth_bytes_per_s": round(best),
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "required": True,
                      "choices": ["serving", "probed", "stopped"]},
            "bind_address": {"type": "str", "default": "0.0.0.0"},
            "port": {"type": "int"},
            "address": {"type": "str", "default": "127.0.0.1"},
            "targets": {"type": "list", "elements": "dict", "default": []},
            "bulk_bytes": {"type": "int", "default": 4 << 20},
            "rounds": {"type": "int", "default": 30},
            "idle_timeout_s": {"type": "float", "default": 30.0},
            "max_duration_s": {"type": "float", "default": 600.0},
            "timeout_s": {"type": "float", "default": 20.0},
        },
        required_if=[("state", "stopped", ["port"])],
        supports_check_mode=True,
    )  # fmt: skip
    params = module.params
    if params["state"] == "serving":
        if module.check_mode:
            module.exit_json(changed=True, port=0, pid=0)
        port, pid = start_server(module)
        module.exit_json(changed=True, port=port, pid=pid)
    if params["state"] == "stopped":
        if module.check_mode:
            module.exit_json(changed=True)
        address = (params["address"], params["port"])
        with contextlib.suppress(OSError), socket.create_connection(address, timeout=5) as conn:
            conn.sendall(QUIT)
        module.exit_json(changed=True)
    links = []
    if not module.check_mode:
        for target in params["targets"]:
            try:
                links.append(
                    probe(target, params["bulk_bytes"], params["rounds"], params["timeout_s"])
                )
            except OSError as error:
                links.append({"to": target.get("name"), "error": str(error)})
    module.exit_json(changed=False, links=links)


if __name__ == "__main__":
    main()
