"""Process helpers the supervisor and stage_service tests share: is a pid alive (zombies are
not), and end the processes a test started — only those pids, and only while they live."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def kill_alive(pids: Iterable[int]) -> None:
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
