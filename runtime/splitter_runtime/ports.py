"""Choose listening ports nobody else will take: free now, and outside the ephemeral range.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, the same range
outgoing connections draw their source ports from; a service bound there can lose its port to
a connection made a moment earlier, and a peer that connects before the service binds can
even connect to itself (TCP simultaneous open). Ports below the ephemeral range, checked free
by binding them, avoid both.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from pathlib import Path

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 20000


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux default 32768–60999)."""
    try:
        low, high = (int(v) for v in _EPHEMERAL.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` can be bound for listening right now."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1", avoid: Iterable[int] = ()) -> list[int]:
    """``count`` distinct ports below the ephemeral range that are free on ``host`` now."""
    low, high = LOWEST, ephemeral_range()[0]
    if high - low < 4 * count:  # an odd kernel setting: fall back to the top of the range
        low, high = 61000, 65535
    taken = set(avoid)
    chosen: list[int] = []
    rng = random.Random()
    for _ in range(50 * count + 100):
        if len(chosen) == count:
            return chosen
        port = rng.randrange(low, high)
        if port not in taken and is_free(port, host):
            taken.add(port)
            chosen.append(port)
    raise OSError(f"found only {len(chosen)} free ports of {count} in {low}-{high} on {host}")
