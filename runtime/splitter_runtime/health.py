"""Health: counters and latency percentiles a stage reports, and a query helper for watchers.

A stage answers ``{"op": "status"}`` on its health port (a ROUTER; ask with a DEALER) and
publishes the same snapshot as a heartbeat every interval from a thread that does not run the
model, so a slow stage keeps beating while a dead one falls silent.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import zmq

from splitter_runtime.errors import GatewayUnavailable


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Stats:
    """Counters shared between the serving loop (writer) and the health thread (reader)."""

    def __init__(self, window: int = 2048) -> None:
        self.lock = threading.Lock()
        self.started = time.time()
        self.served = 0
        self.failed = 0
        self.rejected = 0  # malformed/unexpected messages
        self.forwarded_errors = 0
        self.model_calls = 0  # < served when micro-batching joined requests
        self.queue_depth = 0
        self.state = "starting"
        self._lat: deque[float] = deque(maxlen=window)
        self._compute: deque[float] = deque(maxlen=window)

    def record(self, n: int, total_ms: float, compute_ms: float) -> None:
        with self.lock:
            self.served += n
            self._lat.append(total_ms)
            self._compute.append(compute_ms)

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + n)

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        with self.lock:
            lat = np.array(self._lat) if self._lat else None
            comp = np.array(self._compute) if self._compute else None
            snap = {
                "state": self.state,
                "served": self.served,
                "failed": self.failed,
                "rejected": self.rejected,
                "forwarded_errors": self.forwarded_errors,
                "model_calls": self.model_calls,
                "queue_depth": self.queue_depth,
                "uptime_s": round(time.time() - self.started, 3),
            }
        for key, arr in (("latency", lat), ("compute", comp)):
            snap[f"{key}_p50_ms"] = (
                round(float(np.percentile(arr, 50)), 3) if arr is not None else None
            )
            snap[f"{key}_p99_ms"] = (
                round(float(np.percentile(arr, 99)), 3) if arr is not None else None
            )
        snap["rss_bytes"] = rss_bytes()
        snap["pid"] = os.getpid()
        snap.update(extra)
        return snap


def query(
    address: str,
    *,
    op: str = "status",
    timeout_s: float = 2.0,
    keypair: tuple[bytes, bytes] | None = None,
    server_key: bytes | None = None,
    ctx: zmq.Context | None = None,
) -> dict[str, Any]:
    """Ask one stage's health port; raise GatewayUnavailable when it does not answer in time."""
    ctx = ctx or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        if keypair is not None:
            sock.curve_publickey, sock.curve_secretkey = keypair
            sock.curve_serverkey = server_key
        sock.connect(address)
        sock.send(json.dumps({"op": op}).encode())
        if not sock.poll(int(timeout_s * 1000)):
            raise GatewayUnavailable(
                f"no health answer from {address} within {timeout_s:g} s",
                "check the stage is running and that this key is in its allow_health list",
            )
        return json.loads(sock.recv())
    finally:
        sock.close()
