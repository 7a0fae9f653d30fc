"""Run the collection's playbooks through ansible-runner and sort its events by host.

The CLI never shells out to ``ansible-playbook`` itself: ansible-runner gives structured
events (per host, per task) that become progress and a per-host summary, and the same
playbooks stay runnable by hand and from AWX.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitter.errors import SplitterError

EventHandler = Callable[[dict[str, Any]], None]


def collection_root() -> Path:
    """The directory holding galaxy.yml, playbooks/ and roles/ (the repository root)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "galaxy.yml").exists() or not (root / "playbooks").is_dir():
        raise SplitterError(
            f"the splitter Ansible collection was not found next to {Path(__file__).parent}",
            "install splitter from its source checkout (pip install -e .)",
        )
    return root


@dataclass
class HostOutcome:
    """What happened on one host: ok, failed (with the task and message) or unreachable."""

    name: str
    status: str = "ok"  # ok | failed | unreachable
    message: str = ""
    task: str = ""
    results: dict[str, Any] = field(default_factory=dict)  # task name -> module result


@dataclass
class PlaybookResult:
    """The run's status and each host's outcome."""

    status: str
    rc: int
    hosts: dict[str, HostOutcome]

    @property
    def failed_hosts(self) -> dict[str, HostOutcome]:
        return {n: h for n, h in self.hosts.items() if h.status != "ok"}


def check_inventory(inventory: Path | str) -> Path:
    path = Path(inventory)
    if not path.exists():
        raise SplitterError(
            f"inventory '{path}' does not exist",
            "pass -i with an Ansible inventory file (`splitter lab up` writes one)",
        )
    return path.resolve()


def run_playbook(
    playbook: str,
    inventory: Path | str | list[Path | str],
    extravars: dict[str, Any] | None = None,
    *,
    on_event: EventHandler | None = None,
    limit: str | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PlaybookResult:
    """Run ``playbooks/<playbook>.yml`` against ``inventory``; never raises for host failures."""
    import ansible_runner

    root = collection_root()
    sources = inventory if isinstance(inventory, list) else [inventory]
    inventories = [str(check_inventory(source)) for source in sources]
    hosts: dict[str, HostOutcome] = {}

    def handle(event: dict[str, Any]) -> bool:
        _record(event, hosts)
        if on_event is not None:
            on_event(event)
        return True

    interrupted = threading.Event()

    def should_cancel() -> bool:
        return interrupted.is_set() or bool(cancel and cancel())

    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    private = Path(tempfile.mkdtemp(prefix="splitter-runner-"))
    previous = _catch_interrupt(interrupted)
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(root),
            playbook=str(root / "playbooks" / f"{playbook}.yml"),
            inventory=inventories if len(inventories) > 1 else inventories[0],
            extravars=extravars or {},
            envvars={
                "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
                "ANSIBLE_COLLECTIONS_PATH": str(root / "playbooks" / "collections"),
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_FORCE_COLOR": "False",
                # Our own SSH multiplexing masters, so they can be closed when the run ends
                # (a persisting master would keep a cancelled task running on the device).
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(private / "cp"),
            },
            limit=limit,
            event_handler=handle,
            cancel_callback=should_cancel,
            quiet=True,
            suppress_env_files=True,
        )
        status, rc = runner.status, runner.rc
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        close_ssh_masters(private / "cp")
        shutil.rmtree(private, ignore_errors=True)
    if interrupted.is_set():
        raise KeyboardInterrupt
    return PlaybookResult(status, rc if rc is not None else -1, hosts)


def _catch_interrupt(interrupted: threading.Event) -> Any:
    """Turn Ctrl-C into a cancel request, so ansible-runner stops the playbook cleanly."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, lambda *_: interrupted.set())


def close_ssh_masters(directory: Path) -> None:
    """Ask every SSH control master of this run to exit, ending its remote sessions."""
    if not directory.is_dir():
        return
    for socket_path in directory.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "splitter-master"],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip


def _record(event: dict[str, Any], hosts: dict[str, HostOutcome]) -> None:
    kind = event.get("event", "")
    data = event.get("event_data", {})
    host = data.get("host")
    if not host or not kind.startswith("runner_on_"):
        return
    outcome = hosts.setdefault(host, HostOutcome(host))
    result = data.get("res", {}) or {}
    task = data.get("task", "")
    if kind == "runner_on_ok":
        outcome.results[task] = result
    elif kind == "runner_on_unreachable":
        outcome.status, outcome.task = "unreachable", task
        outcome.message = _first_line(result.get("msg", "unreachable"))
    elif kind == "runner_on_failed" and not data.get("ignore_errors"):
        outcome.status, outcome.task = "failed", task
        message = result.get("msg") or ""
        if result.get("stderr") and (not message or message == "non-zero return code"):
            message = result["stderr"]  # a command's own words say more than its exit code
        outcome.message = _first_line(message or "failed")


def _first_line(text: Any) -> str:
    lines = str(text).strip().splitlines()
    return lines[0][:400] if lines else ""
