"""One error type the CLI turns into a single clear line and exit code 2.

Library code raises :class:`SplitterError` with the cause and the fix; nothing else needs
to know how errors are shown.
"""

from __future__ import annotations


class SplitterError(Exception):
    """A user-facing failure: ``cause`` says what is wrong, ``fix`` what to do about it."""

    exit_code = 2

    def __init__(self, cause: str, fix: str | None = None) -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.cause} — {self.fix}" if self.fix else self.cause
