"""A CURVE client refused by its server dials again once the server learns its key.

libzmq gives up on a refused handshake; without the redial a stage started before its
gateway was reconfigured (deploy of a new plan) would never be heard. Real sockets, real ZAP.
"""

from __future__ import annotations

import time

import zmq
from splitter_runtime.ports import free_ports
from splitter_runtime.security import Redialer, Security


def _server(pair, allowed: list[bytes], address: str):
    ctx = zmq.Context()  # one ZAP handler per context: the server gets its own
    security = Security(ctx, pair)
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    security.serve(pull, "data", allowed)
    pull.bind(address)
    return ctx, security, pull


def _stop(ctx, security, pull) -> None:
    pull.close(linger=0)
    security.close()
    ctx.term()


def _deliver(push: zmq.Socket, pull: zmq.Socket, redial: Redialer | None, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if redial is not None:
            redial.tick()
        try:
            push.send(b"x", zmq.NOBLOCK)
        except zmq.Again:
            time.sleep(0.05)
            continue
        if pull.poll(200):
            return pull.recv() == b"x"
    return False


def test_a_refused_client_reaches_a_server_restarted_with_its_key():
    server_pair, client_pair, other = zmq.curve_keypair(), zmq.curve_keypair(), zmq.curve_keypair()
    address = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    ctx = zmq.Context()
    client_security = Security(ctx, client_pair)
    push = ctx.socket(zmq.PUSH)
    push.linger, push.immediate = 0, 1
    client_security.connect_to(push, server_pair[0])
    server = _server(server_pair, [other[0]], address)  # not our key yet
    push.connect(address)
    redial = Redialer(push, address, retry_s=0.5)
    try:
        assert not _deliver(push, server[2], redial, 1.5)
        assert server[1].denied >= 1
        _stop(*server)
        server = _server(server_pair, [client_pair[0]], address)  # now it is
        assert _deliver(push, server[2], redial, 10.0)
    finally:
        redial.close()
        push.close(linger=0)
        _stop(*server)
        client_security.close()
        ctx.term()
