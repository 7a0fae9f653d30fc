"""One stage service: receive a request, run the stage model, pass the result downstream.

Data plane: a PULL bound on ``bind`` (CURVE server admitting only the upstream's key), a PUSH
connected to ``connect`` (the next stage, or the gateway's result port). Both block at their
high-water marks, so a slow stage back-pressures its upstream instead of growing memory.
Malformed messages are answered with an error that travels down to the gateway under the
request's id; errors from upstream are forwarded unchanged. A separate thread answers health
queries and sends heartbeats, so a busy stage still beats. SIGTERM drains: everything already
received (or arriving while draining) is computed and sent before the process exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from splitter_runtime import backends, keys, wire
from splitter_runtime.config import StageConfig, load_stage
from splitter_runtime.errors import ConfigError, RuntimeFailure, WireError
from splitter_runtime.health import Stats
from splitter_runtime.security import Redialer, Security
from splitter_runtime.service import serve_from_command_line

log = logging.getLogger("splitter_runtime.stage")
QUIET_MS = 200  # while draining: stop once nothing has arrived for this long
IDLE_MS = 100  # an idle stage wakes this often to see whether it should drain
_STAGE_KINDS = frozenset({"data", "error"})


@dataclass
class _Item:
    """A received request (or an error to forward), waiting for the model."""

    id: str
    received: float
    tensors: dict[str, np.ndarray] | None = None
    error: dict[str, str] | None = None

    @property
    def batch(self) -> int:
        return _batch_of(self.tensors)


def _batch_of(tensors: dict[str, np.ndarray] | None) -> int:
    first = next(iter(tensors.values())) if tensors else None
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _bind(sock: zmq.Socket, address: str, what: str) -> None:
    try:
        sock.bind(address)
    except zmq.ZMQError as exc:
        raise ConfigError(
            f"cannot bind the {what} socket to {address}: {exc}",
            "pick a free port in the config, or stop the process that holds it",
        ) from None


class StageServer:
    """Serves one stage until stopped; ``run()`` returns the process exit code."""

    def __init__(self, cfg: StageConfig, backend: backends.Backend | None = None) -> None:
        self.cfg = cfg
        self.stats = Stats()
        self.backend = backend
        self._draining = threading.Event()
        self._health_stop = threading.Event()
        self._queue: deque[_Item] = deque()
        self._drain_deadline: float | None = None
        self._out_dtypes = {s.name: np.dtype(s.dtype) for s in cfg.outputs}
        self._out_names = set(self._out_dtypes)
        self._decode = wire.Decoder(
            expect=cfg.inputs, max_bytes=cfg.limits.max_message_bytes, kinds=_STAGE_KINDS
        )
        self._batching = cfg.batch_size > 1
        self._beat_seq = 0
        self.ctx = zmq.Context()
        sec = cfg.security
        keypair = keys.load_pair(sec.secret_key) if sec.curve and sec.secret_key else None
        self.security = Security(self.ctx, keypair, enabled=sec.curve)
        self._health_ready = threading.Event()
        self._health_error: BaseException | None = None
        self._health = threading.Thread(target=self._health_loop, name="health", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        """Begin draining (SIGTERM/SIGINT handler)."""
        if not self._draining.is_set():
            log.info("stage %s: draining (%d queued)", self.cfg.name, len(self._queue))
        self._draining.set()

    def run(self) -> int:
        cfg = self.cfg
        try:
            self._health.start()
            self._health_ready.wait(10)
            if self._health_error is not None:
                raise self._health_error
            if self.backend is None:
                self.stats.state = "loading"
                backends.verify_model(cfg.model_file, cfg.model_sha256)
                self.backend = backends.load(cfg.backend, cfg.model_file, cfg.num_threads)
                self._warm_up()
            self._serve()
            return 0
        finally:
            self.stats.state = "stopped"
            self._health_stop.set()
            self._health.join(5)
            self.security.close()
            self.ctx.term()

    def _warm_up(self) -> None:
        """Run once on zeros so the first real request does not pay for allocation."""
        dummy = {
            s.name: np.zeros([1 if d is None else d for d in s.shape], dtype=s.dtype)
            for s in self.cfg.inputs
        }
        out = self.backend.run(dummy)
        want = {s.name for s in self.cfg.outputs}
        if set(out) != want:
            raise ConfigError(
                f"the model's outputs {sorted(out)} are not the config's outputs {sorted(want)}",
                "regenerate the stage config from the same stage model",
            )

    # -- data plane ------------------------------------------------------------------------
    def _serve(self) -> None:
        cfg, lim = self.cfg, self.cfg.limits
        sec = self.security
        pull = self.ctx.socket(zmq.PULL)
        pull.rcvhwm = lim.hwm
        pull.maxmsgsize = lim.max_message_bytes
        pull.linger = 0
        pull.heartbeat_ivl, pull.heartbeat_timeout = 1000, 3000
        sec.serve(pull, "data", [keys.load_public(p) for p in cfg.security.allow_upstream])
        _bind(pull, cfg.bind, "data")
        push = self.ctx.socket(zmq.PUSH)
        push.sndhwm = lim.hwm
        push.immediate = 1  # never queue onto a pipe to a peer that is not connected
        push.linger = min(lim.send_timeout_ms, lim.drain_timeout_ms)
        push.heartbeat_ivl, push.heartbeat_timeout = 1000, 3000
        if cfg.security.curve:
            sec.connect_to(push, keys.load_public(cfg.security.downstream_key))
        push.connect(cfg.connect)
        redial = Redialer(push, cfg.connect) if cfg.security.curve else None
        self._pull, self._push = pull, push
        self.stats.state = "serving"
        log.info("stage %s: serving %s -> %s (%s)", cfg.name, cfg.bind, cfg.connect, cfg.backend)
        self._drain_deadline: float | None = None
        # Idle: block in recv (no poll/recv pair per message); wake every IDLE_MS to check
        # whether a drain was requested.
        pull.rcvtimeo = IDLE_MS
        last_arrival = time.monotonic()
        try:
            while True:
                if self._draining.is_set() and self._drain_deadline is None:
                    self.stats.state = "draining"
                    self._drain_deadline = time.monotonic() + lim.drain_timeout_ms / 1000
                if not self._queue:
                    if self._drain_deadline is not None and time.monotonic() > self._drain_deadline:
                        break  # still receiving at the drain limit: stop anyway
                    try:
                        frames = pull.recv_multipart(copy=False)
                    except zmq.Again:
                        if redial is not None:
                            redial.tick()
                        if self._drain_deadline is not None:
                            quiet = (time.monotonic() - last_arrival) * 1000 > QUIET_MS
                            if quiet or time.monotonic() > self._drain_deadline:
                                break
                        continue
                    last_arrival = time.monotonic()
                    if not self._batching:  # one request per model call: no queue
                        self._serve_one(frames)
                        continue
                    self._accept(frames)
                if self._batching and self._fill():  # take what else has arrived, to batch
                    last_arrival = time.monotonic()
                if self._queue:  # (empty when the message was junk naming no request id)
                    self._process()
        finally:
            if redial is not None:
                redial.close()
            pull.close()
            push.close()  # linger lets queued results flush
        log.info("stage %s: stopped after serving %d", cfg.name, self.stats.served)

    def _fill(self) -> bool:
        """Move what has already arrived into the local queue (bounded by ``max_queue``)."""
        pull = self._pull
        got = False
        for _ in range(self.cfg.limits.max_queue - len(self._queue)):
            if not pull.get(zmq.EVENTS) & zmq.POLLIN:
                break
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            got = True
            self._accept(frames)
        self.stats.queue_depth = len(self._queue)
        return got

    def _serve_one(self, frames: list[zmq.Frame]) -> None:
        """The unbatched hot path: decode, run, send; the same outcomes as queue + process."""
        received = time.perf_counter()
        msg = self._data_or_queue(frames, received)
        if msg is None:
            if self._queue:  # an error to pass on
                self._process()
            return
        t0 = time.perf_counter()
        try:
            outputs = self.backend.run(msg.tensors)
            self._check_outputs(outputs, _batch_of(msg.tensors))
        except Exception as exc:  # a model failure fails this request, not the stage
            self._model_failed([_Item(msg.id, received)], exc)
            return
        compute_ms = (time.perf_counter() - t0) * 1000
        self.stats.count("model_calls")
        frames = wire.encode("data", msg.id, outputs)
        # Book it before sending: after the send, the next recv should block at once so the
        # I/O thread (often on this core) puts the result on the wire without waiting for us.
        self.stats.record(1, (time.perf_counter() - received) * 1000, compute_ms)
        if not self._send(frames, msg.id):
            self.stats.count("served", -1)  # it was lost downstream after all (counted failed)

    def _accept(self, frames: list[zmq.Frame]) -> None:
        now = time.perf_counter()
        msg = self._data_or_queue(frames, now)
        if msg is not None:
            self._queue.append(_Item(msg.id, now, tensors=msg.tensors))

    def _data_or_queue(self, frames: list[zmq.Frame], now: float) -> wire.Message | None:
        """The data message in ``frames``; an error (received, or found in it) is queued
        instead, to travel down under its request id."""
        try:
            msg = self._decode(frames)
        except WireError as exc:
            self.stats.count("rejected")
            log.warning("stage %s: rejected a message: %s", self.cfg.name, exc.message)
            if exc.req_id is not None:
                err = {"stage": self.cfg.name, "cause": exc.cause, "fix": exc.fix or ""}
                self._queue.append(_Item(exc.req_id, now, error=err))
            else:
                log.warning("stage %s: ...and it named no request id to answer", self.cfg.name)
            return None
        if msg.kind == "error":
            self._queue.append(_Item(msg.id, now, error=msg.error))
            return None
        return msg

    def _process(self) -> None:
        first = self._queue.popleft()
        if first.error is not None:
            self.stats.count("forwarded_errors")
            self._send(wire.forward_error(first.id, first.error), first.id)
            return
        items = [first]
        total = first.batch
        shape_key = {k: v.shape[1:] for k, v in first.tensors.items()}
        while self._queue and self._queue[0].tensors is not None:
            nxt = self._queue[0]
            if total + nxt.batch > self.cfg.batch_size:
                break
            if {k: v.shape[1:] for k, v in nxt.tensors.items()} != shape_key:
                break
            items.append(self._queue.popleft())
            total += nxt.batch
        self.stats.queue_depth = len(self._queue)
        t0 = time.perf_counter()
        try:
            if len(items) == 1:
                inputs = first.tensors
            else:
                inputs = {k: np.concatenate([it.tensors[k] for it in items]) for k in shape_key}
            outputs = self.backend.run(inputs)
            self._check_outputs(outputs, total)
        except Exception as exc:  # a model failure fails these requests, not the stage
            self._model_failed(items, exc)
            return
        compute_ms = (time.perf_counter() - t0) * 1000
        self.stats.count("model_calls")
        offset = 0
        for it in items:
            part = outputs
            if len(items) > 1:
                part = {k: v[offset : offset + it.batch] for k, v in outputs.items()}
                offset += it.batch
            if self._send(wire.encode("data", it.id, part), it.id):
                done = time.perf_counter()
                self.stats.record(1, (done - it.received) * 1000, compute_ms)

    def _model_failed(self, items: list[_Item], exc: Exception) -> None:
        log.exception("stage %s: model failed", self.cfg.name)
        for it in items:
            self.stats.count("failed")
            self._send(
                wire.error_frames(
                    it.id, self.cfg.name, f"model failed: {exc}", "see the stage's log"
                ),
                it.id,
            )

    def _check_outputs(self, outputs: dict[str, np.ndarray], batch: int) -> None:
        names = self._out_names
        if outputs.keys() != names:
            raise RuntimeFailure(f"model returned {sorted(outputs)}, config says {sorted(names)}")
        for name, dtype in self._out_dtypes.items():
            out = outputs[name]
            if out.dtype != dtype:
                outputs[name] = out = out.astype(dtype)
            if out.shape[:1] != (batch,):
                raise RuntimeFailure(f"output {name} has batch {out.shape[:1]}")

    def _send(self, frames: list[Any], req_id: str) -> bool:
        """Send downstream, waiting (bounded) while the downstream is full or absent."""
        deadline: float | None = None  # set at the first refusal: the usual send costs no clock
        while True:
            try:
                self._push.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                if deadline is None:
                    deadline = time.monotonic() + self.cfg.limits.send_timeout_ms / 1000
                    if self._drain_deadline is not None:  # draining: never past its limit
                        deadline = min(deadline, self._drain_deadline)
                if time.monotonic() > deadline:
                    self.stats.count("failed")
                    log.error(
                        "stage %s: downstream %s took nothing for %d ms; request %s is lost here"
                        " (the gateway fails it on its deadline or when it sees this stage's"
                        " heartbeat report)",
                        self.cfg.name,
                        self.cfg.connect,
                        self.cfg.limits.send_timeout_ms,
                        req_id,
                    )
                    return False
                self._push.poll(50, zmq.POLLOUT)

    # -- health ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self.stats.snapshot(
            stage=self.cfg.name,
            backend=self.cfg.backend,
            model_sha256=self.cfg.model_sha256,
            num_threads=self.cfg.num_threads,
            batch_size=self.cfg.batch_size,
            auth_denied=self.security.denied,
        )

    def _health_loop(self) -> None:
        cfg = self.cfg
        try:
            router = self.ctx.socket(zmq.ROUTER)
            router.router_mandatory = 1
            router.linger = 0
            self.security.serve(
                router, "health", [keys.load_public(p) for p in cfg.security.allow_health]
            )
            _bind(router, cfg.health_bind, "health")
            pub = None
            if cfg.heartbeat_connect:
                pub = self.ctx.socket(zmq.PUB)
                pub.sndhwm = 4
                pub.linger = 100
                if cfg.security.curve:
                    self.security.connect_to(pub, keys.load_public(cfg.security.heartbeat_key))
                pub.connect(cfg.heartbeat_connect)
            redial = Redialer(pub, cfg.heartbeat_connect) if pub and cfg.security.curve else None
        except BaseException as exc:
            self._health_error = exc
            self._health_ready.set()
            return
        self._health_ready.set()
        interval = cfg.heartbeat_interval_ms / 1000
        next_beat = time.monotonic()
        while not self._health_stop.is_set():
            if router.poll(min(50, cfg.heartbeat_interval_ms)):
                self._answer(router)
            if pub is not None and time.monotonic() >= next_beat:
                self._beat(pub)
                next_beat = time.monotonic() + interval
                if redial is not None:
                    redial.tick()
        if redial is not None:
            redial.close()
        if pub is not None:
            self._beat(pub)  # a last beat saying "stopped": a clean exit, not a crash
            pub.close()
        router.close()

    def _beat(self, pub: zmq.Socket) -> None:
        self._beat_seq += 1
        beat = {"v": 1, "stage": self.cfg.name, "seq": self._beat_seq, "status": self.status()}
        with contextlib.suppress(zmq.Again):  # a missed beat is what the watcher measures
            pub.send(json.dumps(beat).encode(), zmq.NOBLOCK)

    def _answer(self, router: zmq.Socket) -> None:
        frames = router.recv_multipart()
        ident, payload = frames[0], frames[-1]
        try:
            req = json.loads(payload) if len(payload) < 4096 else None
            op = req.get("op") if isinstance(req, dict) else None
        except ValueError:
            op = None
        if op == "status":
            reply: dict[str, Any] = self.status()
        else:
            self.stats.count("rejected")
            reply = {"error": "unknown health request", "fix": 'send {"op": "status"}'}
        with contextlib.suppress(zmq.ZMQError):  # the asker left; nothing to answer
            router.send_multipart([ident, json.dumps(reply).encode()], zmq.NOBLOCK)


def _build(config_path: str) -> StageServer:
    cfg = load_stage(config_path)
    if cfg.cpus:
        os.sched_setaffinity(0, cfg.cpus)
    return StageServer(cfg)


def main(argv: list[str] | None = None) -> int:
    """``splitter-stage --config stage.yaml``: serve one stage until SIGTERM."""
    return serve_from_command_line("splitter-stage", main.__doc__ or "", _build, argv)


if __name__ == "__main__":
    sys.exit(main())
