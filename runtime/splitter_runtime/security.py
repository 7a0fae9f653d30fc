"""CURVE on every socket: servers accept only the public keys their config lists.

One :class:`Security` per process owns the ZAP authenticator thread. Each serving socket gets
its own ZAP domain with its own allowlist, so e.g. a stage's data port admits only its
upstream while its health port admits only the watcher.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger(__name__)


class _Allowlist:
    """ZAP credentials provider: a set of allowed z85 public keys per domain."""

    def __init__(self) -> None:
        self.domains: dict[str, set[bytes]] = {}
        self.denied = 0
        self._lock = threading.Lock()

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.domains.get(domain, set())
        if not ok:
            with self._lock:
                self.denied += 1
            log.warning(
                "refused a CURVE client on %s: its public key is not in the allowlist", domain
            )
        return ok


class Security:
    """Holds this process's keypair and the authenticator; ``enabled=False`` is plain TCP."""

    def __init__(
        self, ctx: zmq.Context, keypair: tuple[bytes, bytes] | None, *, enabled: bool = True
    ) -> None:
        self.ctx = ctx
        self.enabled = enabled
        self.keypair = keypair
        self._allow = _Allowlist()
        self._auth: ThreadAuthenticator | None = None
        if enabled:
            if keypair is None:
                raise ValueError("CURVE is on but no keypair was given")
            self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("splitter_runtime.zap"))
            self._auth.start()

    @property
    def denied(self) -> int:
        """How many connections were refused for an unknown key (reported in health)."""
        return self._allow.denied

    def serve(self, sock: zmq.Socket, domain: str, allowed: Iterable[bytes]) -> None:
        """Make ``sock`` a CURVE server that admits only ``allowed`` keys. Call before bind."""
        if not self.enabled:
            return
        assert self._auth is not None and self.keypair is not None
        self._allow.domains[domain] = set(allowed)
        self._auth.configure_curve_callback(domain, credentials_provider=self._allow)
        sock.curve_publickey, sock.curve_secretkey = self.keypair
        sock.curve_server = True
        sock.zap_domain = domain.encode()

    def connect_to(self, sock: zmq.Socket, server_key: bytes | None) -> None:
        """Make ``sock`` a CURVE client of the server whose public key is ``server_key``."""
        if not self.enabled:
            return
        assert self.keypair is not None
        if not server_key:
            raise ValueError("CURVE is on but the server's public key is missing")
        sock.curve_publickey, sock.curve_secretkey = self.keypair
        sock.curve_serverkey = server_key

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


_REFUSED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class Redialer:
    """Dials a CURVE client socket again after its server refused the handshake.

    libzmq does not retry a refused handshake, so a stage that connected before its server
    knew its key (a gateway restarted with a new allowlist) would stay cut off for good. The
    owner thread calls :meth:`tick` in its loop; a refusal is retried every ``retry_s``.
    """

    def __init__(self, sock: zmq.Socket, address: str, retry_s: float = 2.0) -> None:
        self.sock, self.address, self.retry_s = sock, address, retry_s
        self.monitor = sock.get_monitor_socket(_REFUSED)
        self._due: float | None = None

    def tick(self) -> None:
        while True:
            try:
                recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            if self._due is None:
                log.warning("%s refused our key; dialing again in %g s", self.address, self.retry_s)
                self._due = time.monotonic() + self.retry_s
        if self._due is not None and time.monotonic() >= self._due:
            self._due = None
            with contextlib.suppress(zmq.ZMQError):
                self.sock.disconnect(self.address)
            self.sock.connect(self.address)

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self.monitor.close(linger=0)
