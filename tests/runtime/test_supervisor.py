"""splitter-supervise with real processes: daemonizing, restarts, draining stop, give-up.

Every test runs the installed console script against a sleeper child of its own; the
``supervise`` fixture kills, at teardown, every supervisor and child pid its test started
(read from the state files and the child's pid files), so nothing outlives a failed test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from processes import alive, kill_alive

SUPERVISE = Path(sys.executable).with_name("splitter-supervise")

SLEEPER = textwrap.dedent(
    """
    import os, signal, sys, time
    out = sys.argv[1]
    with open(out + ".pids", "a") as f:
        f.write(f"{os.getpid()}\\n")
    def term(*_):
        with open(out + ".drained", "a") as f:
            f.write("drained\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, term)
    while True:
        time.sleep(0.2)
    """
)


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _ancestors(pid: int) -> set[int]:
    found = set()
    while pid > 1:
        pid = _ppid(pid)
        found.add(pid)
    return found


def _wait(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Supervise:
    """Runs the CLI on one state directory and remembers every pid it caused."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "state"
        self.tmp = tmp_path
        self.sleeper = tmp_path / "sleeper.py"
        self.sleeper.write_text(SLEEPER)
        self.pids: set[int] = set()
        self.names: set[str] = set()

    def cli(self, *args: str, new_session: bool = False) -> subprocess.CompletedProcess:
        done = subprocess.run([str(SUPERVISE), *args], capture_output=True, text=True,
                              timeout=60, start_new_session=new_session)  # fmt: skip
        self.collect()
        return done

    def start(self, name: str, *command: str, extra: tuple[str, ...] = (), **kw):
        self.names.add(name)
        command = command or (sys.executable, str(self.sleeper), str(self.tmp / name))
        return self.cli("start", "--state-dir", str(self.dir), "--name", name, *extra, "--",
                        *command, **kw)  # fmt: skip

    def state(self, name: str) -> dict | None:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.dir / f"{name}.json").read_text())
        return None

    def child_pids(self, name: str) -> list[int]:
        path = self.tmp / f"{name}.pids"
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def collect(self) -> None:
        for name in self.names:
            state = self.state(name) or {}
            for key in ("supervisor_pid", "child_pid"):
                if isinstance(state.get(key), int):
                    self.pids.add(state[key])
            self.pids.update(self.child_pids(name))

    def cleanup(self) -> None:
        self.collect()
        kill_alive(self.pids)


@pytest.fixture
def supervise(tmp_path):
    sup = Supervise(tmp_path)
    yield sup
    sup.cleanup()


def test_start_daemonizes_and_survives_its_session(supervise):
    done = supervise.start("svc", extra=("--token", "abc", "--env", "SPLITTER_T=1"),
                           new_session=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    state = supervise.state("svc")
    assert state["state"] == "running" and state["token"] == "abc"
    assert state["supervisor_pid"] == reply["supervisor_pid"]
    assert state["child_pid"] == reply["child_pid"]
    assert state["restarts"] == 0 and state["last_exit"] is None
    assert state["command"][-1].endswith("svc")
    sup, child = state["supervisor_pid"], state["child_pid"]
    # The session that ran `start` is gone; the daemon lives on in a session of its own.
    assert alive(sup) and alive(child)
    assert os.getsid(sup) != os.getsid(0)
    assert _ppid(sup) == 1 or _ppid(sup) in _ancestors(os.getpid())  # init or a subreaper
    assert os.getsid(sup) != sup  # not a session leader: can never get a terminal again
    assert Path(f"/proc/{sup}/cwd").resolve() == Path("/")
    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
    assert b"SPLITTER_T=1" in environ
    status = supervise.cli("status", "--state-dir", str(supervise.dir), "--name", "svc")
    assert status.returncode == 0 and json.loads(status.stdout)["alive"] is True


def test_killed_child_is_restarted_then_stop_drains(supervise):
    assert supervise.start("svc").returncode == 0
    first = supervise.state("svc")
    os.kill(first["child_pid"], signal.SIGKILL)

    def restarted():
        state = supervise.state("svc")
        return state if state and state["restarts"] == 1 and state["state"] == "running" else None

    state = _wait(restarted, what="a restart")
    assert state["child_pid"] != first["child_pid"] and alive(state["child_pid"])
    assert state["supervisor_pid"] == first["supervisor_pid"]
    assert state["last_exit"]["signal"] == signal.SIGKILL
    log = (supervise.dir / "svc.log").read_text()
    assert "exited with signal SIGKILL; restarting in 0.5 s" in log

    done = supervise.cli("stop", "--state-dir", str(supervise.dir), "--name", "svc")
    assert done.returncode == 0 and json.loads(done.stdout)["was_running"] is True
    assert (supervise.tmp / "svc.drained").read_text() == "drained\n"  # SIGTERM reached it
    assert not (supervise.dir / "svc.json").exists()
    assert not alive(state["supervisor_pid"]) and not alive(state["child_pid"])
    # Idempotent: a second stop finds nothing and says so.
    again = supervise.cli("stop", "--state-dir", str(supervise.dir), "--name", "svc")
    assert again.returncode == 0 and json.loads(again.stdout)["was_running"] is False
    status = supervise.cli("status", "--state-dir", str(supervise.dir), "--name", "svc")
    assert status.returncode == 3 and json.loads(status.stdout)["alive"] is False


def test_second_start_is_a_no_op(supervise):
    assert supervise.start("svc", extra=("--token", "one")).returncode == 0
    first = supervise.state("svc")
    done = supervise.start("svc", extra=("--token", "two"))
    assert done.returncode == 0
    reply = json.loads(done.stdout)
    assert reply["already_running"] is True and reply["token"] == "one"
    assert supervise.state("svc") == first
    assert supervise.child_pids("svc") == [first["child_pid"]]  # no second child ever ran


def test_crash_looping_command_fails_and_supervisor_exits(supervise):
    done = supervise.start("bad", sys.executable, "-c", "raise SystemExit(3)",
                           extra=("--backoff", "0.05"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    sup = json.loads(done.stdout)["supervisor_pid"]
    _wait(lambda: not alive(sup), what="the supervisor to give up")
    state = supervise.state("bad")
    assert state["state"] == "failed" and state["restarts"] == 4
    assert state["last_exit"]["code"] == 3 and state["child_pid"] is None
    status = supervise.cli("status", "--state-dir", str(supervise.dir), "--name", "bad")
    assert status.returncode == 3 and json.loads(status.stdout)["state"] == "failed"
    assert "giving up (state failed)" in (supervise.dir / "bad.log").read_text()


def test_unstartable_command_fails_in_the_foreground(supervise):
    done = supervise.start("nope", str(supervise.tmp / "no-such-program"))
    assert done.returncode == 1
    assert "no-such-program" in done.stderr
    assert supervise.state("nope") is None


def test_stale_state_file_with_a_foreign_live_pid_is_not_trusted(supervise):
    supervise.dir.mkdir(parents=True)
    stale = {"name": "svc", "supervisor_pid": os.getpid(), "child_pid": os.getpid(),
             "token": "x", "state": "running", "command": ["x"]}  # fmt: skip
    (supervise.dir / "svc.json").write_text(json.dumps(stale))
    status = supervise.cli("status", "--state-dir", str(supervise.dir), "--name", "svc")
    assert status.returncode == 3 and json.loads(status.stdout)["alive"] is False
    done = supervise.cli("stop", "--state-dir", str(supervise.dir), "--name", "svc")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "svc", "stopped": False, "was_running": False,
                                       "removed_stale_state": True}  # fmt: skip
    assert not (supervise.dir / "svc.json").exists()  # we are still here: not signalled
    # A start over a stale file starts a fresh supervisor instead of trusting it.
    (supervise.dir / "svc.json").write_text(json.dumps(stale))
    done = supervise.start("svc")
    assert done.returncode == 0 and json.loads(done.stdout)["started"] is True
    assert supervise.state("svc")["supervisor_pid"] != os.getpid()


def test_stop_kills_a_child_that_ignores_sigterm(supervise):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    done = supervise.start("stub", sys.executable, "-c", stubborn,
                           extra=("--stop-timeout", "0.5"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    state = supervise.state("stub")
    time.sleep(0.2)  # let the child install its handler
    done = supervise.cli("stop", "--state-dir", str(supervise.dir), "--name", "stub")
    assert done.returncode == 0 and json.loads(done.stdout)["killed"] is False
    assert not alive(state["child_pid"]) and not alive(state["supervisor_pid"])
    assert "SIGKILL" in (supervise.dir / "stub.log").read_text()
