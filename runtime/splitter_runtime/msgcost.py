"""What one message costs this machine's CPU in the runtime: encode, CURVE, send, receive,
decode — the part of a hop a raw link measurement does not see.

``python -m splitter_runtime.msgcost`` prints ``{"fixed_ms", "ms_per_mb"}``: the median time
to pass a message through a CURVE PUSH → PULL pair on loopback in one process (sender and
receiver work on the same CPU), at a small and a large size, as a line. The planner charges
half of each end's cost to every hop (the sender's half and the receiver's half).
"""

from __future__ import annotations

import json
import time

import numpy as np
import zmq

from splitter_runtime import wire
from splitter_runtime.ports import free_ports

SIZES = (4096, 1 << 20)


def _one_size(push: zmq.Socket, pull: zmq.Socket, nbytes: int, rounds: int) -> float:
    tensors = {"t": np.ones((1, nbytes // 4), np.float32)}
    expect = [wire.TensorSpec("t", "float32", (None, nbytes // 4))]
    times = []
    for _ in range(rounds):
        tick = time.perf_counter()
        push.send_multipart(wire.encode("data", "m", tensors), copy=False)
        wire.decode(pull.recv_multipart(copy=False), expect=expect)
        times.append((time.perf_counter() - tick) * 1000)
    return float(np.median(times))


def measure(rounds: int = 40) -> dict[str, float]:
    """Fixed ms per message and ms per MB, through CURVE on loopback."""
    ctx = zmq.Context()
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    try:
        pull.curve_server = True
        pull.curve_publickey, pull.curve_secretkey = server_public, server_secret
        push.curve_publickey, push.curve_secretkey = client_public, client_secret
        push.curve_serverkey = server_public
        address = f"tcp://127.0.0.1:{free_ports(1)[0]}"
        pull.bind(address)
        push.connect(address)
        _one_size(push, pull, SIZES[0], 5)  # handshake and warm-up
        small, large = (_one_size(push, pull, n, rounds) for n in SIZES)
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()
    per_mb = max(0.0, (large - small) / (SIZES[1] - SIZES[0]) * 1e6)
    fixed = max(0.0, small - per_mb * SIZES[0] / 1e6)
    return {"fixed_ms": round(fixed, 4), "ms_per_mb": round(per_mb, 4)}


if __name__ == "__main__":
    print(json.dumps(measure()))
