"""``splitter-supervise``: keep one service process running on a device without systemd.

Containers and the lab's network-namespace devices have no init system that restarts a
crashed stage or survives the SSH session that started it. This is that init system, for one
service: ``start`` daemonizes (double fork, own session) and runs the command as its child,
restarting it with backoff; ``stop`` forwards SIGTERM so the stage drains; ``status`` reports.

State lives in ``STATE_DIR/NAME.json`` (written atomically). A pid in it is trusted only when
``/proc/<pid>/cmdline`` shows the supervisor daemon for the same name and state directory, so
a stale file whose pid was reused never makes ``stop`` signal an unrelated process.

Standard library only: this runs on devices next to the stage, before anything else works.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from typing import Any

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
DAEMON_MARK = "_daemon"  # the hidden subcommand the daemon runs under (its cmdline proves it)
BACKOFF_MAX_S = 10.0
FAIL_LIMIT = 5  # this many exits within FAIL_WINDOW_S: give up, state "failed"
FAIL_WINDOW_S = 60.0
HEALTHY_RUN_S = 10.0  # a child that ran this long resets the backoff
STARTUP_TIMEOUT_S = 30.0
NOT_RUNNING = 3  # `status` exit code, as LSB init scripts use


def _now() -> str:
    """UTC wall-clock time with milliseconds, for the state file and the log."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def state_path(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, f"{name}.json")


def read_state(state_dir: str, name: str) -> dict[str, Any] | None:
    """The state file, or None when missing or unreadable (a torn file cannot exist: rename)."""
    try:
        with open(state_path(state_dir, name)) as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(state_dir: str, name: str, state: dict[str, Any]) -> None:
    """Write temp + rename, so a reader sees the old or the new state, never half of one."""
    path = state_path(state_dir, name)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(state, handle, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def remove_state(state_dir: str, name: str) -> bool:
    try:
        os.unlink(state_path(state_dir, name))
    except FileNotFoundError:
        return False
    return True


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc/<pid>/stat, or None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def is_our_supervisor(pid: Any, state_dir: str, name: str) -> bool:
    """True only for a live daemon of this module supervising NAME in STATE_DIR.

    A pid from a file may have been reused by anything since; the command line is the proof.
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    argv = _cmdline(pid)
    if "--" in argv:
        argv = argv[: argv.index("--")]
    if DAEMON_MARK not in argv:
        return False
    if not any(arg.endswith(os.path.join("splitter_runtime", "supervisor.py")) for arg in argv):
        return False

    def value(flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv[:-1] else None

    return value("--name") == name and value("--state-dir") == os.path.realpath(state_dir)


def _is_child_of(pid: Any, parent: int) -> bool:
    stat = _proc_stat(pid) if isinstance(pid, int) and pid > 0 else None
    return stat is not None and stat[1] == parent and stat[0] not in ("Z", "X")


# ---------------------------------------------------------------- the daemon


class Daemon:
    """The supervisor process: runs the child, restarts it, stops it on SIGTERM."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.child_started = 0.0
        self.env = dict(os.environ)
        self.env.update(_parse_env(args.env))
        self.state: dict[str, Any] = {
            "name": args.name,
            "supervisor_pid": os.getpid(),
            "child_pid": None,
            "token": args.token,
            "command": args.command,
            "started_at": _now(),
            "restarts": 0,
            "state": "running",
            "last_exit": None,
            "log": args.log,
            "stop_timeout": args.stop_timeout,
        }

    def log(self, message: str) -> None:
        sys.stdout.write(f"{_now()} splitter-supervise[{self.args.name}]: {message}\n")
        sys.stdout.flush()

    def save(self, **changes: Any) -> None:
        self.state.update(changes)
        write_state(self.args.state_dir, self.args.name, self.state)

    def request_stop(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            self.log(f"got {signal.Signals(signum).name}: stopping")
        self.stopping = True

    def spawn(self) -> None:
        self.child = subprocess.Popen(self.args.command, env=self.env, stdin=subprocess.DEVNULL)
        self.child_started = time.monotonic()
        self.log(f"started child {self.child.pid}: {' '.join(self.args.command)}")

    def run(self, notify_fd: int | None) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, lambda *_: None)  # a handler, not SIG_IGN: exec resets it
        try:
            self.spawn()
        except OSError as exc:
            self.log(f"cannot start {self.args.command[0]}: {exc}")
            _notify(notify_fd, {"ok": False, "error": f"cannot start {self.args.command}: {exc}"})
            return 1
        assert self.child is not None
        self.save(child_pid=self.child.pid)
        _notify(notify_fd, {"ok": True, "supervisor_pid": os.getpid(), "child_pid": self.child.pid})
        return self.loop()

    def loop(self) -> int:
        backoff = self.args.backoff
        exits: list[float] = []
        while True:
            if self.stopping:
                return self.stop_child()
            assert self.child is not None
            code = self.child.poll()
            if code is None:
                time.sleep(0.05)
                continue
            ran_s = time.monotonic() - self.child_started
            now = time.monotonic()
            exits = [t for t in exits if now - t < FAIL_WINDOW_S] + [now]
            last_exit = {
                "code": code if code >= 0 else None,
                "signal": -code if code < 0 else None,
                "at": _now(),
            }
            how = f"code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
            if len(exits) >= FAIL_LIMIT:
                self.log(f"child {self.child.pid} exited with {how}; {len(exits)} exits within "
                         f"{FAIL_WINDOW_S:.0f} s: giving up (state failed)")  # fmt: skip
                self.save(state="failed", child_pid=None, last_exit=last_exit)
                return 1
            if ran_s >= HEALTHY_RUN_S:
                backoff = self.args.backoff
            self.log(f"child {self.child.pid} exited with {how}; restarting in {backoff:g} s")
            self.save(state="backoff", child_pid=None, last_exit=last_exit)
            deadline = time.monotonic() + backoff
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.stopping:
                return self.stop_child()
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            try:
                self.spawn()
            except OSError as exc:
                self.log(f"cannot restart {self.args.command[0]}: {exc} (state failed)")
                self.save(state="failed")
                return 1
            self.save(state="running", child_pid=self.child.pid,
                      restarts=self.state["restarts"] + 1)  # fmt: skip

    def stop_child(self) -> int:
        """SIGTERM (the stage drains), SIGKILL after --stop-timeout; then no state file."""
        self.save(state="stopping")
        child = self.child
        if child is not None and child.poll() is None:
            self.log(f"sending SIGTERM to child {child.pid}")
            child.send_signal(signal.SIGTERM)
            try:
                code = child.wait(timeout=self.args.stop_timeout)
                self.log(f"child {child.pid} exited with {code}")
            except subprocess.TimeoutExpired:
                self.log(f"child {child.pid} still running after {self.args.stop_timeout:g} s: "
                         "SIGKILL")  # fmt: skip
                child.kill()
                child.wait()
        remove_state(self.args.state_dir, self.args.name)
        self.log("stopped")
        return 0


def _notify(fd: int | None, message: dict[str, Any]) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(message).encode() + b"\n")
        os.close(fd)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


# ---------------------------------------------------------------- commands


def _lock_dir(state_dir: str) -> int:
    """Serialize `start`s on one state directory, so two never both start NAME."""
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _log_tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def cmd_start(args: argparse.Namespace) -> int:
    """Daemonize a supervisor for NAME unless a live one exists; return once the child runs."""
    os.makedirs(args.state_dir, exist_ok=True)
    os.makedirs(os.path.dirname(args.log), exist_ok=True)
    _parse_env(args.env)  # fail here, in the foreground, not in the daemon
    lock = _lock_dir(args.state_dir)
    try:
        state = read_state(args.state_dir, args.name)
        if state and is_our_supervisor(state.get("supervisor_pid"), args.state_dir, args.name):
            print(json.dumps({"name": args.name, "already_running": True,
                              "token": state.get("token"), "state": state.get("state"),
                              "supervisor_pid": state.get("supervisor_pid"),
                              "child_pid": state.get("child_pid")}))  # fmt: skip
            return 0
        remove_state(args.state_dir, args.name)  # stale, or the record of a failed one
        reply = _daemonize(args)
    finally:
        os.close(lock)
    if not reply.get("ok"):
        error = reply.get("error") or "the supervisor exited before starting the command"
        print(f"error: {error}\n{_log_tail(args.log)}", file=sys.stderr)
        return 1
    print(json.dumps({"name": args.name, "started": True, "token": args.token,
                      "supervisor_pid": reply["supervisor_pid"],
                      "child_pid": reply["child_pid"]}))  # fmt: skip
    return 0


def _daemonize(args: argparse.Namespace) -> dict[str, Any]:
    """Double fork + setsid, then exec the daemon; read its one-line report from a pipe.

    The daemon is exec'd (python -I, this file) rather than left as a fork so that its
    /proc cmdline names it exactly: that is what `stop` checks before signalling a pid.
    """
    argv = [sys.executable, "-I", os.path.abspath(__file__), DAEMON_MARK,
            "--state-dir", args.state_dir, "--name", args.name, "--log", args.log,
            "--token", args.token, "--stop-timeout", str(args.stop_timeout),
            "--backoff", str(args.backoff)]  # fmt: skip
    for pair in args.env:
        argv += ["--env", pair]
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - runs in the forked children
        try:
            os.close(read_end)
            os.setsid()  # leave the caller's session: its SIGHUP and its end do not reach us
            if os.fork():
                os._exit(0)  # not a session leader: can never acquire a controlling terminal
            os.chdir("/")
            os.umask(0o022)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.set_inheritable(write_end, True)
            os.execv(sys.executable,
                     [*argv, "--notify-fd", str(write_end), "--", *args.command])  # fmt: skip
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(write_end, json.dumps({"ok": False, "error": str(exc)}).encode())
        finally:
            os._exit(127)
    os.close(write_end)
    os.waitpid(first, 0)
    data = b""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_end], [], [], deadline - time.monotonic())
        if not ready:
            break
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    try:
        return json.loads(data.decode().splitlines()[0])
    except (ValueError, IndexError):
        return {"ok": False}


def cmd_daemon(args: argparse.Namespace) -> int:
    return Daemon(args).run(args.notify_fd)


def cmd_stop(args: argparse.Namespace) -> int:
    """SIGTERM our supervisor and wait it out; SIGKILL it and its child after --timeout."""
    state = read_state(args.state_dir, args.name)
    pid = state.get("supervisor_pid") if state else None
    if not state or not is_our_supervisor(pid, args.state_dir, args.name):
        stale = remove_state(args.state_dir, args.name)
        print(json.dumps({"name": args.name, "stopped": False, "was_running": False,
                          "removed_stale_state": stale}))  # fmt: skip
        return 0
    assert isinstance(pid, int)
    timeout = args.timeout
    if timeout is None:
        timeout = float(state.get("stop_timeout") or 30) + 5
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_our_supervisor(pid, args.state_dir, args.name):
        time.sleep(0.05)
    killed = False
    if is_our_supervisor(pid, args.state_dir, args.name):
        current = read_state(args.state_dir, args.name) or state
        child = current.get("child_pid")
        if _is_child_of(child, pid):
            os.kill(child, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        killed = True
    remove_state(args.state_dir, args.name)
    print(json.dumps({"name": args.name, "stopped": True, "was_running": True,
                      "killed": killed}))  # fmt: skip
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir, args.name)
    if state is None:
        print(json.dumps({"name": args.name, "state": "absent", "alive": False}))
        return NOT_RUNNING
    alive = is_our_supervisor(state.get("supervisor_pid"), args.state_dir, args.name)
    print(json.dumps({**state, "alive": alive}, sort_keys=True))
    return 0 if alive else NOT_RUNNING


def _name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: use letters, digits, '_', '.', '-' only")
    return value


def _abspath(value: str) -> str:
    return os.path.realpath(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitter-supervise",
        description="Run one service under a small supervisor (for devices without systemd).",
    )
    sub = parser.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", required=True, type=_abspath,
                       help="where NAME.json (the supervisor's state) lives")  # fmt: skip
        p.add_argument("--name", required=True, type=_name, help="service name")

    for action, helptext in (("start", "start NAME unless it runs"), (DAEMON_MARK, None)):
        p = sub.add_parser(action, help=helptext) if helptext else sub.add_parser(action)
        common(p)
        p.add_argument("--log", type=_abspath, help="output file (default STATE_DIR/NAME.log)")
        p.add_argument("--token", default="", help="identifies the service's inputs")
        p.add_argument(
            "--stop-timeout",
            type=float,
            default=30.0,
            help="seconds between SIGTERM and SIGKILL of the child (default 30)",
        )
        p.add_argument(
            "--backoff",
            type=float,
            default=0.5,
            help="first restart delay in seconds, doubled up to 10 (default 0.5)",
        )
        p.add_argument("--env", action="append", default=[], metavar="K=V",
                       help="environment variable for the command (repeatable)")  # fmt: skip
        if action == DAEMON_MARK:
            p.add_argument("--notify-fd", type=int)
        p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")

    p = sub.add_parser("stop", help="stop NAME (SIGTERM, then SIGKILL after --timeout)")
    common(p)
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for the supervisor (default its stop timeout + 5)",
    )
    p = sub.add_parser("status", help="print NAME's state; exit 0 if running, 3 if not")
    common(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action in ("start", DAEMON_MARK):
        if args.command and args.command[0] == "--":
            args.command = args.command[1:]
        if not args.command:
            parser.error("start needs a command after --")
        if args.log is None:
            args.log = os.path.join(args.state_dir, f"{args.name}.log")
    handlers = {"start": cmd_start, DAEMON_MARK: cmd_daemon, "stop": cmd_stop,
                "status": cmd_status}  # fmt: skip
    try:
        return handlers[args.action](args)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
