"""The Python client: ``predict`` for one request, ``submit``/``map`` for many in flight.

One background thread owns the DEALER socket (ZeroMQ sockets are not thread-safe); callers
hand it requests over an inproc pipe and get ``concurrent.futures.Future`` objects back. Every
request has an id and a deadline: it ends with its result, the pipeline's error for it, or a
:class:`RequestTimeout` — never silence. Unanswered requests stay in :meth:`Client.pending`
with their inputs, and a failed one carries its request (``exc.request``) so it can be
resubmitted.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from splitter_runtime import keys, wire
from splitter_runtime.errors import (
    AuthenticationFailed,
    GatewayUnavailable,
    RequestFailed,
    RequestRefused,
    RequestTimeout,
    WireError,
)

log = logging.getLogger("splitter_runtime.client")
_REPLY_KINDS = frozenset({"result", "error", "status", "info"})
_ids = itertools.count()
RECV_SLICE_MS = 50  # predict()'s direct path looks up from its socket this often


class _DirectSlot:
    """The result half of a Future for ``predict()``'s direct path: one waiter, no locks.

    Whoever takes the request out of ``Client._pending`` (under its lock) is the only one to
    resolve it, so no two threads ever set it.
    """

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done, self._value, self._error = False, None, None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any) -> None:
        self._value, self._done = value, True

    def set_exception(self, error: BaseException) -> None:
        self._error, self._done = error, True

    def result(self, timeout: float | None = None) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(slots=True)
class PendingRequest:
    """A request the client holds until it is answered (kept so it can be retried)."""

    id: str
    kind: str
    inputs: dict[str, np.ndarray]
    timeout_s: float
    deadline: float
    future: Future | _DirectSlot = field(repr=False)
    submitted: float = field(default_factory=time.monotonic)


class Client:
    """Connects to a gateway; thread-safe; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        address: str,
        *,
        server_key: str | Path | bytes | None = None,
        secret_key: str | Path | None = None,
        curve: bool = True,
        timeout_s: float = 30.0,
        max_in_flight: int = 64,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        resubmit: bool = False,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.resubmit_retryable = resubmit
        self.resubmitted = 0  # requests sent again after a retryable failure
        self.max_message_bytes = max_message_bytes
        self._pending: dict[str, PendingRequest] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._stop = threading.Event()
        self._auth_failure: str | None = None
        self._connected = False
        self._info: dict[str, Any] | None = None
        self._expect: wire.Expected | None = None  # the pipeline's inputs, once info() is known
        self._decode = wire.Decoder(max_bytes=max_message_bytes, kinds=_REPLY_KINDS)
        self._prefix = f"c{os.getpid()}x{uuid.uuid4().hex[:8]}"
        self._ctx = zmq.Context()
        self._keypair = None
        self._server_key = None
        if curve:
            if secret_key is None or server_key is None:
                raise AuthenticationFailed(
                    "CURVE is on but the client has no key",
                    "pass secret_key=<client>.key_secret and server_key=<gateway>.key",
                )
            self._keypair = keys.load_pair(secret_key)
            self._server_key = (
                server_key if isinstance(server_key, bytes) else keys.load_public(server_key)
            )
        inproc = f"inproc://{self._prefix}"
        self._in = self._ctx.socket(zmq.PAIR)
        self._in.linger = 0
        self._in.bind(inproc)
        # predict()'s direct path: a second DEALER the calling thread uses itself (one caller at
        # a time, under this lock), so a synchronous request costs no thread handoff.
        self._sync_lock = threading.Lock()
        self._sync: zmq.Socket | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(inproc,), name="splitter-client", daemon=True
        )
        self._thread.start()
        self._ready.wait(5)

    # -- public API ------------------------------------------------------------------------
    def submit(self, inputs: Any, timeout_s: float | None = None) -> Future:
        """Send one request now; the Future resolves to ``{output name: array}`` or raises."""
        tensors = self._as_tensors(inputs)
        return self._submit("infer", tensors, timeout_s)

    def predict(self, inputs: Any, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """One request, waiting for its answer. Outputs are read-only views; copy to modify.

        One thread at a time sends on a socket of its own (no thread handoff, no window slot:
        it is one request in flight); concurrent callers go through the I/O thread.
        """
        tensors = self._as_tensors(inputs)
        if self._sync_lock.acquire(blocking=False):  # else another thread is on it: use the pipe
            try:
                slot = self._predict_direct(tensors, timeout_s)
            finally:
                self._sync_lock.release()
            if slot is not None:
                return self._settle(slot, timeout_s)
        return self._settle(self._submit("infer", tensors, timeout_s), timeout_s)

    def map(
        self, batches: Iterable[Any], timeout_s: float | None = None, window: int = 16
    ) -> Iterator[dict[str, np.ndarray]]:
        """Stream many requests, keeping up to ``window`` in flight; yields results in order."""
        inflight: deque[Future] = deque()
        for item in batches:
            inflight.append(self.submit(item, timeout_s))
            if len(inflight) >= window:
                yield self._settle(inflight.popleft(), timeout_s)
        while inflight:
            yield self._settle(inflight.popleft(), timeout_s)

    def status(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The gateway's view: per-stage state (up/dead/...), heartbeat ages and counters."""
        return self._wait(self._submit("status", {}, timeout_s), timeout_s)

    def info(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The pipeline's input and output tensor specs."""
        if self._info is None:
            info = self._wait(self._submit("info", {}, timeout_s), timeout_s)
            self._expect = wire.Expected([wire.TensorSpec.from_dict(s) for s in info["inputs"]])
            self._info = info
        return self._info

    def wait_ready(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Block until every stage is up (bounded); return the status."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.status(timeout_s=min(2.0, max(0.1, deadline - time.monotonic())))
            except RequestTimeout:
                continue
            if last.get("ready"):
                return last
            time.sleep(0.05)
        states = {s["name"]: s["state"] for s in last.get("stages", [])}
        raise GatewayUnavailable(
            f"the pipeline at {self.address} was not ready within {timeout_s:g} s "
            f"(stages: {states or 'no answer'})",
            "check the stage logs; a stage may have failed to load its model",
        )

    def pending(self) -> list[PendingRequest]:
        """Requests sent and not yet answered, oldest first."""
        with self._lock:
            return sorted(self._pending.values(), key=lambda p: p.submitted)

    def resubmit(self, request: PendingRequest, timeout_s: float | None = None) -> Future:
        """Send a failed request's inputs again (as a new request id)."""
        return self._submit(request.kind, request.inputs, timeout_s or request.timeout_s)

    def close(self) -> None:
        """Stop the I/O thread; unanswered requests fail with an explicit error."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)
        for p in self._take_all():
            self._resolve_error(p, RequestFailed(p.id, "the client was closed before an answer"))
        # A predict() on the direct socket sees its request failed within one RECV_SLICE_MS.
        if self._sync_lock.acquire(timeout=5):
            if self._sync is not None:
                self._sync.close(linger=0)
                self._sync = None
            self._sync_lock.release()
            self._in.close()
            self._ctx.term()
        else:  # a caller is stuck on the direct socket: do not wait for it forever
            self._in.close()
            self._ctx.destroy(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def _as_tensors(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            tensors = {str(k): np.asarray(v) for k, v in inputs.items()}
        else:
            specs = self.info()["inputs"]
            if len(specs) != 1:
                names = [s["name"] for s in specs]
                raise WireError(
                    f"this pipeline takes {len(specs)} inputs, got one array",
                    f"pass a dict keyed by {names}",
                )
            tensors = {specs[0]["name"]: np.asarray(inputs)}
        if self._expect is not None:
            wire.check_tensors(tensors, self._expect, None)
        return tensors

    def _open_sync(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        self._configure(sock)
        sock.rcvtimeo = RECV_SLICE_MS
        sock.connect(self.address)
        self._sync = sock
        return sock

    def _configure(self, dealer: zmq.Socket) -> None:
        dealer.linger = 0
        dealer.immediate = 1  # queue nothing until the (authenticated) connection is up
        dealer.sndhwm = dealer.rcvhwm = 1000
        dealer.maxmsgsize = self.max_message_bytes
        dealer.heartbeat_ivl, dealer.heartbeat_timeout = 1000, 3000
        if self._keypair is not None:
            dealer.curve_publickey, dealer.curve_secretkey = self._keypair
            dealer.curve_serverkey = self._server_key

    def _predict_direct(
        self, tensors: dict[str, np.ndarray], timeout_s: float | None
    ) -> _DirectSlot | None:
        """Send on the direct socket and read the answer in this thread; ``None`` when that
        socket is not connected yet (the caller then goes through the I/O thread, which also
        reports refused keys). Deadlines stay the I/O thread's job: it resolves the slot."""
        sock = self._sync if self._sync is not None else self._open_sync()
        if not self._connected or self._stop.is_set():
            return None
        p, frames = self._prepare("infer", tensors, timeout_s, direct=True)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:  # not connected (yet): hand it to the I/O thread instead
            self._take(p.id)
            return None
        fut = p.future
        while not fut.done():
            try:
                reply = sock.recv_multipart(copy=False)
            except zmq.Again:
                continue  # a slice passed: the I/O thread may have expired or closed it
            self._on_reply(reply)
        return fut

    def _prepare(
        self,
        kind: str,
        tensors: dict[str, np.ndarray],
        timeout_s: float | None,
        direct: bool = False,
    ) -> tuple[PendingRequest, list[Any]]:
        """Register a request (its id, deadline, slot in the window) and encode it."""
        if self._stop.is_set():
            raise RequestFailed("-", "the client is closed", "create a new Client")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        rid = f"{self._prefix}.{next(_ids)}"
        if direct:
            fut: Future | _DirectSlot = _DirectSlot()
            windowed = False
        else:
            fut = Future()
            windowed = kind == "infer"  # status/info queries never wait behind a full window
        if windowed and not self._slots.acquire(timeout=timeout):
            raise RequestTimeout(
                rid,
                f"{timeout:g} s passed with the in-flight window full",
                "raise max_in_flight, or wait for answers before submitting more",
            )
        p = PendingRequest(rid, kind, tensors, timeout, time.monotonic() + timeout, fut)
        try:
            frames = wire.encode(kind, rid, tensors, timeout_ms=max(1, int(timeout * 1000)))
        except BaseException:
            if windowed:
                self._slots.release()
            raise
        with self._lock:
            self._pending[rid] = p
        return p, frames

    def _submit(self, kind: str, tensors: dict[str, np.ndarray], timeout_s: float | None) -> Future:
        p, frames = self._prepare(kind, tensors, timeout_s)
        if kind == "infer":
            p.future.add_done_callback(lambda _f: self._slots.release())
        with self._send_lock:
            self._in.send_multipart([p.id.encode(), *frames], copy=False)
        return p.future

    def _wait(self, fut: Future, timeout_s: float | None) -> Any:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            return fut.result(timeout=timeout + 5)  # the I/O thread resolves it at the deadline
        except FutureTimeout:
            raise RequestTimeout(
                "-", "the client's I/O thread did not resolve the request"
            ) from None

    def _settle(self, fut: Future | _DirectSlot, timeout_s: float | None) -> Any:
        """The answer to ``fut``; with ``resubmit``, a retryable failure is sent again once
        the pipeline serves, until the first request's deadline."""
        while True:
            try:
                return self._wait(fut, timeout_s)
            except RequestFailed as exc:
                p = getattr(exc, "request", None)
                if not (self.resubmit_retryable and exc.retryable and p is not None):
                    raise
                fut = self._again(p, exc)
                timeout_s = p.deadline - time.monotonic()

    def _again(self, p: PendingRequest, failure: RequestFailed) -> Future:
        """Wait (within ``p``'s deadline) until the pipeline serves, then send ``p`` again."""
        left = p.deadline - time.monotonic()
        serving = False
        if left > 0:
            try:
                self.wait_ready(timeout_s=left)
                serving = True
            except GatewayUnavailable:
                pass
        if not serving:
            exc = RequestTimeout(
                p.id,
                f"the pipeline did not serve again within the request's {p.timeout_s:g} s "
                f"after it failed ({failure.cause})",
                failure.fix,
                failure.stage,
            )
            exc.request = p  # type: ignore[attr-defined]
            raise exc from failure
        self.resubmitted += 1
        log.info("client: sending %s again after: %s", p.id, failure.cause)
        left = max(0.001, p.deadline - time.monotonic())
        return self._submit(p.kind, p.inputs, left)

    def _take(self, rid: str) -> PendingRequest | None:
        with self._lock:
            return self._pending.pop(rid, None)

    def _take_all(self) -> list[PendingRequest]:
        with self._lock:
            items = list(self._pending.values())
            self._pending.clear()
            return items

    @staticmethod
    def _resolve_error(p: PendingRequest, exc: RequestFailed) -> None:
        exc.request = p  # type: ignore[attr-defined]
        if not p.future.done():
            p.future.set_exception(exc)

    # -- the I/O thread --------------------------------------------------------------------
    def _loop(self, inproc: str) -> None:
        pipe = self._ctx.socket(zmq.PAIR)
        pipe.linger = 0
        pipe.connect(inproc)
        dealer = self._ctx.socket(zmq.DEALER)
        self._configure(dealer)
        monitor = dealer.get_monitor_socket()
        dealer.connect(self.address)
        poller = zmq.Poller()
        for s in (pipe, dealer, monitor):
            poller.register(s, zmq.POLLIN)
        outbox: deque[tuple[str, list[Any]]] = deque()
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    self._step(poller, pipe, dealer, monitor, outbox)
                except Exception:  # never let the I/O thread die: requests would hang
                    log.exception("client: I/O thread error (continuing)")
        finally:
            dealer.disable_monitor()
            monitor.close()
            dealer.close()
            pipe.close()

    def _step(
        self,
        poller: zmq.Poller,
        pipe: zmq.Socket,
        dealer: zmq.Socket,
        monitor: zmq.Socket,
        outbox: deque[tuple[str, list[Any]]],
    ) -> None:
        """One turn of the I/O loop: pipe → gateway, gateway → futures, deadlines."""
        events = dict(poller.poll(20 if outbox else 50))
        if monitor in events:
            self._on_monitor(monitor)
        if pipe in events:
            for _ in range(1000):
                try:
                    rid, *frames = pipe.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                outbox.append((rid.bytes.decode(), frames))
        while outbox:
            rid, frames = outbox[0]
            if rid not in self._pending:  # already timed out
                outbox.popleft()
                continue
            try:
                dealer.send_multipart(frames, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break  # not connected yet or gateway full: keep it (bounded by deadline)
            outbox.popleft()
        if dealer in events:
            for _ in range(1000):
                try:
                    frames = dealer.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._on_reply(frames)
        self._expire()

    def _on_monitor(self, monitor: zmq.Socket) -> None:
        while True:
            try:
                ev = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            e = ev["event"]
            if e == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._auth_failure = (
                    f"the gateway at {self.address} refused this client's key "
                    f"(ZAP status {ev.get('value')})"
                )
                log.error("%s", self._auth_failure)
            elif (
                e == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                or e == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            ):
                self._auth_failure = (
                    f"the CURVE handshake with {self.address} failed "
                    "(wrong server key, or the gateway does not use CURVE)"
                )
            elif e == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._connected, self._auth_failure = True, None
            elif e == zmq.EVENT_DISCONNECTED:
                self._connected = False

    def _on_reply(self, frames: list[zmq.Frame]) -> None:
        try:
            msg = self._decode(frames)
        except WireError as exc:
            log.error("client: malformed reply: %s", exc.message)
            p = self._take(exc.req_id) if exc.req_id else None
            if p is not None:
                self._resolve_error(p, RequestFailed(p.id, f"malformed reply: {exc.cause}"))
            return
        p = self._take(msg.id)
        if p is None:
            log.warning("client: reply for %s arrived after its deadline; dropped", msg.id)
            return
        if msg.kind == "error":
            e = msg.error or {}
            self._resolve_error(
                p,
                RequestFailed(
                    p.id,
                    e.get("cause", "?"),
                    e.get("fix") or None,
                    e.get("stage", ""),
                    retryable=wire.is_retryable(e),
                ),
            )
        elif msg.kind == "result":
            p.future.set_result(msg.tensors)
        else:
            p.future.set_result(msg.body)

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [p for p in self._pending.values() if p.deadline < now]
            for p in late:
                del self._pending[p.id]
        for p in late:
            if self._auth_failure and not self._connected:
                exc: RequestFailed = RequestRefused(
                    p.id,
                    self._auth_failure,
                    "use the client key generated for this deployment (its public half must be "
                    "in the gateway's allow_clients)",
                )
            elif not self._connected:
                exc = RequestTimeout(
                    p.id,
                    f"no connection to the gateway at {self.address} within {p.timeout_s:g} s",
                    "check the address and that the gateway is running",
                )
            else:
                exc = RequestTimeout(
                    p.id,
                    f"no answer within {p.timeout_s:g} s",
                    "check client.status() for a slow or dead stage; raise timeout_s if slow",
                )
            self._resolve_error(p, exc)
