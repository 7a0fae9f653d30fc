"""splitter.pipeline.stage_service through real Ansible on localhost (supervisor manager).

Each step is one ``ansible-playbook`` run with the repository's ansible.cfg, so the module is
found by its FQCN exactly as the playbooks find it; the play saves the registered result as
JSON for the test to read. The service is a small Python sleeper; the ``services`` fixture
kills, at teardown, every supervisor and child pid the test caused, even when the test fails.

The systemd manager cannot run here (no systemd on this machine): only its unit-file
rendering is tested, by importing the module file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from processes import alive, kill_alive

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODULE_FILE = ROOT / "plugins" / "modules" / "stage_service.py"

SLEEPER = textwrap.dedent(
    """
    import os, signal, sys, time
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()}\\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(0.2)
    """
)


class Services:
    """Runs the module ad hoc and remembers every pid its services had."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.state_dir = tmp_path / "state"
        self.pid_file = tmp_path / "pids"
        (tmp_path / "sleeper.py").write_text(SLEEPER)
        self.command = [sys.executable, str(tmp_path / "sleeper.py"), str(self.pid_file)]
        self.pids: set[int] = set()

    def run(self, *, check: bool = False, **args) -> dict:
        """One play on localhost: the module task, then its registered result saved as JSON."""
        args.setdefault("state_dir", str(self.state_dir))
        args.setdefault("manager", "supervisor")
        out = self.tmp / "result.json"
        out.unlink(missing_ok=True)
        play = [{
            "name": "Stage service step", "hosts": "localhost", "gather_facts": False,
            "tasks": [
                {"name": "Run the module", "splitter.pipeline.stage_service": args,
                 "register": "step", "ignore_errors": True},
                {"name": "Save its result", "check_mode": False,
                 "ansible.builtin.copy": {"content": "{{ step | to_json }}", "dest": str(out),
                                          "mode": "0644"}},
            ],
        }]  # fmt: skip
        playbook = self.tmp / "step.yml"
        playbook.write_text(json.dumps(play))  # JSON is YAML
        argv = [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
        ]
        if check:
            argv.append("--check")
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
               "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}  # fmt: skip
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        self.collect()
        assert done.returncode == 0 and out.exists(), done.stdout + done.stderr
        return json.loads(out.read_text())

    def state(self, name: str) -> dict | None:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.state_dir / f"{name}.json").read_text())
        return None

    def collect(self) -> None:
        for path in self.state_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(path.read_text())
                self.pids.update(
                    state[k] for k in ("supervisor_pid", "child_pid") if isinstance(state[k], int)
                )
        if self.pid_file.exists():
            self.pids.update(int(x) for x in self.pid_file.read_text().split())

    def cleanup(self) -> None:
        self.collect()
        kill_alive(self.pids)


@pytest.fixture
def services(tmp_path):
    svc = Services(tmp_path)
    yield svc
    svc.cleanup()


def test_started_is_idempotent_restarts_on_new_token_and_absent_cleans_up(services):
    name = "splitter-test-s0-dev1"
    started = dict(name=name, command=services.command, token="t1", wait_s=0.3,
                   environment={"SPLITTER_X": "1"})  # fmt: skip

    first = services.run(**started)
    assert first["changed"] is True and first["restarted"] is False
    assert first["manager"] == "supervisor" and first["token"] == "t1"
    assert first["log_file"] == str(services.state_dir / f"{name}.log")
    pid = first["pid"]
    assert alive(pid) and services.state(name)["child_pid"] == pid
    assert b"SPLITTER_X=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")

    again = services.run(**started)  # a second deploy: nothing touched
    assert again["changed"] is False and again["restarted"] is False and again["pid"] == pid

    would = services.run(**{**started, "token": "t2"}, check=True)
    assert would["changed"] is True and would["restarted"] is True
    assert services.state(name)["token"] == "t1" and alive(pid)  # check mode did nothing

    second = services.run(**{**started, "token": "t2"})
    assert second["changed"] is True and second["restarted"] is True
    assert second["pid"] != pid and alive(second["pid"]) and not alive(pid)
    assert services.state(name)["token"] == "t2"

    would = services.run(name=name, state="absent", check=True)
    assert would["changed"] is True and alive(second["pid"])

    supervisor_pid = services.state(name)["supervisor_pid"]
    gone = services.run(name=name, state="absent")
    assert gone["changed"] is True
    assert not alive(second["pid"]) and not alive(supervisor_pid)
    assert not (services.state_dir / f"{name}.json").exists()
    assert not (services.state_dir / f"{name}.log").exists()

    assert services.run(name=name, state="absent")["changed"] is False


def test_stopped_then_started_again(services):
    name = "svc"
    first = services.run(name=name, command=services.command)
    assert first["changed"] is True
    stopped = services.run(name=name, state="stopped")
    assert stopped["changed"] is True and not alive(first["pid"])
    assert services.run(name=name, state="stopped")["changed"] is False
    again = services.run(name=name, command=services.command)
    assert again["changed"] is True and alive(again["pid"]) and again["pid"] != first["pid"]
    services.run(name=name, state="absent")


def test_a_service_that_dies_at_once_fails_with_its_log_tail(services):
    command = [sys.executable, "-c", "import sys; print('bad config: no model'); sys.exit(2)"]
    result = services.run(name="dies", command=command, wait_s=0.8)
    assert result["failed"] is True
    assert "did not stay up" in result["msg"]
    assert "bad config: no model" in result["log_tail"]
    services.run(name="dies", state="absent")


def test_bad_name_is_refused(services):
    result = services.run(name="no spaces", command=services.command)
    assert result["failed"] is True and "letters, digits" in result["msg"]


def _load_module():
    spec = importlib.util.spec_from_file_location("stage_service", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_systemd_unit_rendering():
    """Only the unit text: this machine has no systemd, so the systemd path cannot run here."""
    mod = _load_module()
    command = ["/opt/splitter/venv/bin/python", "-m", "splitter_runtime.stage", "--config",
               "/etc/splitter/demo/s0 copy.yaml", "50%", 'say "hi"', "$HOME"]  # fmt: skip
    text = mod.render_unit("splitter-demo-s0-dev1", command, {"B": "two words", "A": "1%"},
                           "abc123", 45)  # fmt: skip
    lines = text.splitlines()
    assert mod.unit_token(text) == "abc123"
    assert "# splitter-token: abc123" in lines
    assert lines.index("[Unit]") < lines.index("[Service]") < lines.index("[Install]")
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    assert exec_start == (
        "ExecStart=/opt/splitter/venv/bin/python -m splitter_runtime.stage --config "
        '"/etc/splitter/demo/s0 copy.yaml" "50%%" "say \\"hi\\"" "$$HOME"'
    )
    assert [line for line in lines if line.startswith("Environment=")] == [
        'Environment="A=1%%"',
        'Environment="B=two words"',
    ]
    for line in ("Type=simple", "Restart=on-failure", "RestartSec=1", "KillSignal=SIGTERM",
                 "TimeoutStopSec=45", "WantedBy=multi-user.target"):  # fmt: skip
        assert line in lines
    assert mod.unit_token("[Unit]\n") is None
