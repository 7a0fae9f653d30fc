"""The gateway: where requests enter and results leave, and the pipeline's watcher.

Clients talk to a ROUTER (CURVE server admitting only listed client keys). A request is
checked against the pipeline's inputs, given a gateway id (so clients cannot collide or spoof
each other's ids) and pushed to the first stage; the last stage pushes results (or errors) to
the gateway's result port, and the gateway routes each back to the client that asked.

Every admitted request ends in exactly one reply: its result, the error a stage reported, a
timeout, or "stage X is down" when X's heartbeats stop. Heartbeats arrive on a SUB port; a
stage silent for ``dead_after_ms`` is dead, one that says "stopped" left cleanly.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from splitter_runtime import keys, wire
from splitter_runtime.config import GatewayConfig, load_gateway
from splitter_runtime.errors import WireError
from splitter_runtime.security import Security
from splitter_runtime.service import serve_from_command_line
from splitter_runtime.stage import _bind

log = logging.getLogger("splitter_runtime.gateway")
_CLIENT_KINDS = frozenset({"infer", "status", "info"})
_RESULT_KINDS = frozenset({"data", "error"})
CHECK_EVERY_S = 0.01  # deadlines and heartbeat silences are checked this often, not per message
STOP_GRACE_S = 0.3
_STATE_FROM_BEAT = {"serving": "up", "draining": "draining", "stopped": "stopped"}


@dataclass(slots=True)
class _Pending:
    ident: bytes
    client_id: str
    deadline: float
    t0: float
    spec_key: wire.SpecKey
    frames: list[Any]  # tensor frames, kept until pushed into the pipeline


@dataclass
class _StageView:
    name: str
    state: str = "starting"  # starting | up | draining | stopped | dead
    last_beat: float | None = None
    status: dict[str, Any] | None = None
    since: float = 0.0
    pid: int | None = None  # of the process beating: a new one means the stage restarted


class Gateway:
    """Runs the gateway loop until ``request_stop``; one thread owns all sockets."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.ctx = zmq.Context()
        sec = cfg.security
        keypair = keys.load_pair(sec.secret_key) if sec.curve and sec.secret_key else None
        self.security = Security(self.ctx, keypair, enabled=sec.curve)
        self.stages = {s.name: _StageView(s.name, since=time.monotonic()) for s in cfg.stages}
        self.inflight: dict[str, _Pending] = {}
        self.waiting: deque[str] = deque()  # admitted, not yet accepted by the first stage
        self.counts = dict.fromkeys(
            ("served", "failed", "timed_out", "rejected", "busy", "late", "undeliverable"), 0
        )
        self._lat: deque[float] = deque(maxlen=2048)
        self._next = 0
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once the sockets are bound
        max_bytes = cfg.limits.max_message_bytes
        self._decode_client = wire.Decoder(
            expect=cfg.inputs, max_bytes=max_bytes, kinds=_CLIENT_KINDS
        )
        self._decode_result = wire.Decoder(
            expect=cfg.outputs, max_bytes=max_bytes, kinds=_RESULT_KINDS
        )
        self._not_up = len(self.stages)  # stages not "up": admit requests only at 0
        self._next_check = 0.0

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    # -- setup -----------------------------------------------------------------------------
    def _sockets(self) -> None:
        cfg, lim, sec = self.cfg, self.cfg.limits, self.security
        pub = keys.load_public
        self.clients = self.ctx.socket(zmq.ROUTER)
        self.clients.router_mandatory = 1
        self.clients.maxmsgsize = lim.max_message_bytes
        self.clients.sndhwm = self.clients.rcvhwm = max(lim.hwm, 64)
        self.clients.linger = 5000  # let the last replies out when stopping
        sec.serve(self.clients, "clients", [pub(p) for p in cfg.security.allow_clients])
        _bind(self.clients, cfg.client_bind, "client")
        self.first = self.ctx.socket(zmq.PUSH)
        self.first.sndhwm = lim.hwm
        self.first.immediate = 1
        self.first.linger = 0
        self.first.heartbeat_ivl, self.first.heartbeat_timeout = 1000, 3000
        if cfg.security.curve:
            sec.connect_to(self.first, pub(cfg.first_stage_key))
        self.first.connect(cfg.first_stage)
        self.results = self.ctx.socket(zmq.PULL)
        self.results.rcvhwm = lim.hwm
        self.results.maxmsgsize = lim.max_message_bytes
        self.results.linger = 0
        sec.serve(self.results, "results", [pub(p) for p in cfg.security.allow_upstream])
        _bind(self.results, cfg.result_bind, "result")
        self.beats = self.ctx.socket(zmq.SUB)
        self.beats.subscribe(b"")
        self.beats.maxmsgsize = wire.MAX_HEADER_BYTES
        self.beats.linger = 0
        sec.serve(self.beats, "heartbeat", [pub(p) for p in cfg.security.allow_heartbeat])
        _bind(self.beats, cfg.heartbeat_bind, "heartbeat")

    # -- loop ------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            self._sockets()
            self.ready.set()
            log.info(
                "gateway: clients on %s, pipeline %s", self.cfg.client_bind, self.cfg.first_stage
            )
            poller = zmq.Poller()
            for s in (self.clients, self.results, self.beats):
                poller.register(s, zmq.POLLIN)
            stop_deadline: float | None = None
            idle_since = time.monotonic()
            while True:
                if self._stop.is_set() and stop_deadline is None:
                    lim = self.cfg.limits
                    drain_ms = min(lim.request_timeout_ms, lim.drain_timeout_ms)
                    stop_deadline = time.monotonic() + drain_ms / 1000
                if stop_deadline is not None:
                    now = time.monotonic()
                    if self.inflight:
                        idle_since = now
                    # Keep answering a moment after the last reply so clients read it before
                    # the connection closes (closing right away lost replies under load).
                    if now > stop_deadline or now - idle_since > STOP_GRACE_S:
                        break
                timeout = 5 if self.waiting else (10 if self.inflight else 50)
                events = dict(poller.poll(timeout))
                if self.results in events:
                    self._drain(self.results, self._on_result)
                if self.beats in events:
                    self._drain(self.beats, self._on_beat)
                if self.clients in events:
                    self._drain(self.clients, self._on_client)
                if self.waiting:
                    self._push_waiting()
                now = time.monotonic()
                if now >= self._next_check:
                    self._next_check = now + CHECK_EVERY_S
                    self._check_deadlines()
        finally:
            for pending_id in list(self.inflight):
                self._fail(
                    pending_id, "gateway", "the gateway stopped", "resubmit later", retryable=True
                )
            log.info("gateway: stopped; %s", json.dumps(self.counts))
            for s in ("clients", "first", "results", "beats"):
                if hasattr(self, s):
                    getattr(self, s).close()
            self.security.close()
            self.ctx.term()
        return 0

    def _drain(self, sock: zmq.Socket, handler: Any, limit: int = 256) -> None:
        for _ in range(limit):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            handler(frames)
            if not sock.get(zmq.EVENTS) & zmq.POLLIN:  # cheaper than a recv raising Again
                return

    # -- clients ---------------------------------------------------------------------------
    def _reply(self, ident: bytes, frames: list[Any]) -> None:
        try:
            self.clients.send_multipart([ident, *frames], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # client gone (EHOSTUNREACH) or not reading (EAGAIN)
            self.counts["undeliverable"] += 1
            log.warning("gateway: could not deliver a reply to a client: %s", exc)

    def _reply_error(
        self, ident: bytes, req_id: str, stage: str, cause: str, fix: str, retryable: bool = False
    ) -> None:
        self._reply(ident, wire.error_frames(req_id, stage, cause, fix, retryable))

    def _on_client(self, frames: list[zmq.Frame]) -> None:
        ident = frames[0].bytes
        try:
            msg = self._decode_client(frames[1:])
        except WireError as exc:
            self.counts["rejected"] += 1
            log.warning("gateway: rejected a client message: %s", exc.message)
            self._reply_error(ident, exc.req_id or "unknown", "gateway", exc.cause, exc.fix or "")
            return
        if msg.kind == "status":
            self._reply(ident, [wire.header_bytes("status", msg.id, body=self.status())])
        elif msg.kind == "info":
            self._reply(ident, [wire.header_bytes("info", msg.id, body=self.info())])
        else:
            self._admit(ident, msg)

    def _admit(self, ident: bytes, msg: wire.Message) -> None:
        if self._not_up or self._stop.is_set():
            down = [s for s in self.stages.values() if s.state != "up"]
            cause = (
                "the gateway is stopping"
                if self._stop.is_set()
                else "the pipeline is not serving: "
                + ", ".join(f"stage {s.name} is {s.state}" for s in down)
            )
            self.counts["rejected"] += 1
            self._reply_error(
                ident, msg.id, "gateway", cause, "check `status`, retry later", retryable=True
            )
            return
        if len(self.inflight) >= self.cfg.limits.max_in_flight:
            self.counts["busy"] += 1
            self._reply_error(
                ident,
                msg.id,
                "gateway",
                f"busy: {len(self.inflight)} requests already in flight",
                "keep fewer requests in flight, or raise limits.max_in_flight",
                retryable=True,
            )
            return
        timeout_ms = msg.header.get("timeout_ms")
        if type(timeout_ms) is not int or timeout_ms <= 0:
            timeout_ms = self.cfg.limits.request_timeout_ms
        self._next += 1
        gid = f"g{self._next}"
        now = time.monotonic()
        pending = _Pending(ident, msg.id, now + timeout_ms / 1000, now, msg.spec_key, msg.frames)
        self.inflight[gid] = pending
        # Nothing queued ahead of it: straight into the pipeline, unless the first stage is full.
        if self.waiting or not self._push(gid, pending):
            self.waiting.append(gid)

    def _push(self, gid: str, p: _Pending) -> bool:
        """Hand one admitted request to the first stage; False when it is full (never blocks)."""
        try:
            self.first.send_multipart(
                [wire.tensor_header("data", gid, p.spec_key), *p.frames], zmq.NOBLOCK, copy=False
            )
        except zmq.Again:
            return False
        p.frames = []
        return True

    def _push_waiting(self) -> None:
        """Hand admitted requests to the first stage while it accepts them (never blocks)."""
        while self.waiting:
            gid = self.waiting[0]
            p = self.inflight.get(gid)
            if p is not None and not self._push(gid, p):
                return  # back-pressure: the first stage is full; retry next loop
            self.waiting.popleft()

    # -- results ---------------------------------------------------------------------------
    def _on_result(self, frames: list[zmq.Frame]) -> None:
        try:
            msg = self._decode_result(frames)
        except WireError as exc:
            self.counts["rejected"] += 1
            log.error("gateway: a malformed result: %s", exc.message)
            if exc.req_id in self.inflight:
                self._fail(exc.req_id, "gateway", f"malformed result: {exc.cause}", exc.fix or "")
            return
        p = self.inflight.pop(msg.id, None)
        if p is None:
            self.counts["late"] += 1
            log.warning("gateway: result for %s arrived after it was answered; dropped", msg.id)
            return
        if msg.kind == "error":
            self.counts["failed"] += 1
            self._reply(p.ident, wire.forward_error(p.client_id, msg.error))
            return
        self.counts["served"] += 1
        self._lat.append((time.monotonic() - p.t0) * 1000)
        hdr = wire.tensor_header("result", p.client_id, msg.spec_key)
        self._reply(p.ident, [hdr, *msg.frames])

    def _fail_all(self, stage: str, cause: str) -> None:
        for gid in list(self.inflight):
            self._fail(
                gid,
                stage,
                cause,
                "restart the stage (or re-plan without its device), then resubmit",
                retryable=True,
            )

    def _fail(
        self,
        gid: str,
        stage: str,
        cause: str,
        fix: str,
        counter: str = "failed",
        retryable: bool = False,
    ) -> None:
        p = self.inflight.pop(gid, None)
        if p is not None:
            self.counts[counter] += 1
            self._reply_error(p.ident, p.client_id, stage, cause, fix, retryable)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for s in self.stages.values():
            if s.state in ("up", "draining", "starting") and s.last_beat is not None:
                silent = (now - s.last_beat) * 1000
                if silent > self.cfg.dead_after_ms:
                    self._set_state(s, "dead", now)
                    log.error(
                        "gateway: stage %s is dead (no heartbeat for %.0f ms)", s.name, silent
                    )
                    self._fail_all(
                        s.name,
                        f"stage {s.name} stopped sending heartbeats {silent:.0f} ms ago "
                        "(crashed or unreachable) while this request was in the pipeline",
                    )
            elif (
                s.state == "stopped"
                and self.inflight
                and (now - s.since) * 1000 > self.cfg.dead_after_ms
            ):
                # A clean stop drains what the stage had received; whatever is still unanswered
                # a grace period later was stranded upstream of it and will never come back.
                self._fail_all(
                    s.name, f"stage {s.name} was stopped while this request was in the pipeline"
                )
        expired = [gid for gid, p in self.inflight.items() if p.deadline < now]
        for gid in expired:
            self._fail(
                gid,
                "gateway",
                "no answer within its timeout",
                "raise the timeout, or check `status` for a slow or dead stage",
                counter="timed_out",
            )

    # -- heartbeats / status ---------------------------------------------------------------
    def _on_beat(self, frames: list[zmq.Frame]) -> None:
        try:
            beat = json.loads(frames[-1].bytes)
            s = self.stages[beat["stage"]]
            status = beat["status"]
            state = _STATE_FROM_BEAT.get(status.get("state"), "starting")
        except (ValueError, KeyError, TypeError, AttributeError):
            self.counts["rejected"] += 1
            log.warning("gateway: ignored a malformed or unknown heartbeat")
            return
        s.last_beat = time.monotonic()
        s.status = status
        pid = status.get("pid")
        if s.pid is not None and pid != s.pid and self.inflight:
            # Restarted before it was missed: whatever the old process held is gone.
            log.error("gateway: stage %s restarted (pid %s, was %s)", s.name, pid, s.pid)
            self._fail_all(
                s.name,
                f"stage {s.name} restarted (pid {s.pid} → {pid}) while this request was in "
                "the pipeline; what it held was lost",
            )
        s.pid = pid
        if state != s.state:
            log.info("gateway: stage %s is %s", s.name, state)
            self._set_state(s, state, s.last_beat)

    def _set_state(self, s: _StageView, state: str, now: float) -> None:
        s.state, s.since = state, now
        self._not_up = sum(1 for v in self.stages.values() if v.state != "up")

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        lat = np.array(self._lat) if self._lat else None
        return {
            "ready": all(s.state == "up" for s in self.stages.values()),
            "gateway": {
                **self.counts,
                "in_flight": len(self.inflight),
                "waiting": len(self.waiting),
                "latency_p50_ms": round(float(np.percentile(lat, 50)), 3)
                if lat is not None
                else None,
                "latency_p99_ms": round(float(np.percentile(lat, 99)), 3)
                if lat is not None
                else None,
                "auth_denied": self.security.denied,
            },
            "stages": [
                {
                    "name": s.name,
                    "state": s.state,
                    "for_s": round(now - s.since, 3),
                    "last_beat_age_s": round(now - s.last_beat, 3) if s.last_beat else None,
                    "status": s.status,
                }
                for s in self.stages.values()
            ],
        }

    def info(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.cfg.inputs],
            "outputs": [s.to_dict() for s in self.cfg.outputs],
            "stages": [s.name for s in self.cfg.stages],
        }


def main(argv: list[str] | None = None) -> int:
    """``splitter-gateway --config gateway.yaml``: serve clients until SIGTERM."""
    return serve_from_command_line(
        "splitter-gateway", main.__doc__ or "", lambda path: Gateway(load_gateway(path)), argv
    )


if __name__ == "__main__":
    sys.exit(main())
