"""Errors of the runtime: each names the cause and the fix, like the controller's errors.

The runtime cannot import ``splitter.errors`` (a device has no controller), so it keeps its
own small hierarchy; the controller wraps these into ``SplitterError`` at its edge.
"""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base class: ``cause`` says what is wrong, ``fix`` what to do about it."""

    def __init__(self, cause: str, fix: str | None = None) -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.cause} — {self.fix}" if self.fix else self.cause


class ConfigError(RuntimeFailure):
    """A stage/gateway config or model file is wrong; the process refuses to start."""


class WireError(RuntimeFailure):
    """A message broke the wire format; ``req_id`` is set when the header named one."""

    def __init__(self, cause: str, fix: str | None = None, req_id: str | None = None) -> None:
        self.req_id = req_id
        super().__init__(cause, fix)


class RequestFailed(RuntimeFailure):
    """The pipeline answered this request with an error (or could not answer it).

    ``retryable``: the request was fine and the pipeline was not (a stage died or stopped, it
    was not serving); sending it again once the pipeline is up may succeed.
    """

    def __init__(
        self,
        req_id: str,
        cause: str,
        fix: str | None = None,
        stage: str = "",
        retryable: bool = False,
    ) -> None:
        self.req_id = req_id
        self.stage = stage
        self.retryable = retryable
        where = f" at {stage}" if stage else ""
        super().__init__(f"request {req_id} failed{where}: {cause}", fix)


class RequestTimeout(RequestFailed):
    """No answer arrived within the request's timeout."""


class AuthenticationFailed(RuntimeFailure):
    """The peer refused our CURVE key (or we have none it accepts)."""


class GatewayUnavailable(RuntimeFailure):
    """The gateway did not answer at all within the timeout."""


class RequestRefused(RequestTimeout, AuthenticationFailed):
    """A request that timed out because the gateway refused this client's CURVE key."""
