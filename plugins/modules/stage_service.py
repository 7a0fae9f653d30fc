#!/usr/bin/python
# Copyright: splitter developers
# Apache License 2.0 (see LICENSE)
"""Ansible module: run one splitter service (a stage, the gateway) idempotently."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: stage_service
short_description: Run a splitter stage service under systemd or splitter-supervise
version_added: "1.0.0"
description:
  - Keeps one long-running service (a pipeline stage, the gateway) started, stopped or
    removed on a device, under systemd where systemd runs, else under C(splitter-supervise),
    the runtime's own supervisor (containers, the lab's network-namespace devices).
  - I(token) identifies what the service runs (for example the sha256 of its config and
    model). A service already running with the same token and command is left alone, so a
    second deploy restarts nothing; a different token restarts it.
  - Uses only the Python standard library on the device.
author:
  - splitter developers
options:
  name:
    description: Service name (letters, digits, C(_), C(.), C(-)), e.g. C(splitter-demo-s0-dev1).
    type: str
    required: true
  state:
    description:
      - C(started) starts the service, or restarts it when its token or command changed.
      - C(stopped) stops it (SIGTERM, the stage drains; SIGKILL after I(stop_timeout)).
      - C(absent) stops it and removes its unit (systemd) or its state and log files.
    type: str
    choices: [started, stopped, absent]
    default: started
  command:
    description: The service's argv; the first element is an absolute path. Required for C(started).
    type: list
    elements: str
  manager:
    description:
      - C(auto) uses systemd when C(/run/systemd/system) is a directory and C(systemctl)
        exists, else C(supervisor).
    type: str
    choices: [auto, systemd, supervisor]
    default: auto
  state_dir:
    description: Where the supervisor keeps C(NAME.json); required for the supervisor manager.
    type: path
  log_file:
    description: Where the service's output goes (supervisor manager; systemd uses the journal).
    type: path
  supervisor:
    description:
      - The C(splitter-supervise) executable.
      - Default C(splitter-supervise) next to C(command[0]) (for C(stopped) and C(absent)
        without I(command), next to the command the service was started with).
    type: path
  token:
    description: Identifies the service's inputs; a change restarts a running service.
    type: str
    default: ""
  environment:
    description: Environment variables for the service.
    type: dict
    default: {}
  stop_timeout:
    description: Seconds between SIGTERM and SIGKILL when stopping.
    type: int
    default: 30
  wait_s:
    description:
      - After starting, check that the service is still running (not restarted) after this
        many seconds; fail with the tail of its log otherwise. C(0) does not check.
    type: float
    default: 0
attributes:
  check_mode:
    support: full
    details: Reports what would change; starts, stops and writes nothing.
  diff_mode:
    support: none
notes:
  - The systemd manager writes C(/etc/systemd/system/NAME.service) and needs root.
  - The supervisor manager keeps the service alive across the SSH session that started it and
    restarts it with backoff; after 5 exits within 60 s it gives up (state C(failed)).
"""

EXAMPLES = r"""
- name: Run stage 0 (restarted only when its config or model changed)
  splitter.pipeline.stage_service:
    name: splitter-demo-s0-dev1
    command:
      - /opt/splitter/venv/bin/python
      - -m
      - splitter_runtime.stage
      - --config
      - /etc/splitter/demo/s0.yaml
    token: "{{ stage_config_sha256 }}"
    state_dir: /var/lib/splitter/services
    log_file: /var/log/splitter/splitter-demo-s0-dev1.log
    wait_s: 2

- name: Remove it
  splitter.pipeline.stage_service:
    name: splitter-demo-s0-dev1
    state: absent
    state_dir: /var/lib/splitter/services
"""

RETURN = r"""
name:
  description: The service name.
  returned: always
  type: str
manager:
  description: The manager used, C(systemd) or C(supervisor).
  returned: always
  type: str
pid:
  description: The service's process id when known (0 otherwise, and in check mode).
  returned: always
  type: int
token:
  description: The token the service now runs with (empty when it does not run).
  returned: always
  type: str
restarted:
  description: Whether a running service was restarted because its token or command changed.
  returned: always
  type: bool
unit_path:
  description: The systemd unit file.
  returned: when manager is systemd
  type: str
log_file:
  description: Where the service's output goes (null under systemd, which uses the journal).
  returned: always
  type: str
"""

import contextlib
import json
import os
import re
import time

from ansible.module_utils.basic import AnsibleModule

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
UNIT_DIR = "/etc/systemd/system"
TOKEN_PREFIX = "# splitter-token: "
# Words systemd reads literally in ExecStart= (no quotes, specifiers or variables inside).
SAFE_WORD = re.compile(r"[A-Za-z0-9_./:=@+,-]+")


# ---------------------------------------------------------------- systemd


def _systemd_quote(word, expand_dollar=True):
    """Quote one word for a unit file: C-style double quotes; '%' and '$' escaped.

    systemd expands specifiers (%n) everywhere and, in ExecStart=, $VAR and ${VAR}:
    a literal % or $ must be doubled.
    """
    escaped = word.replace("%", "%%")
    if expand_dollar:
        escaped = escaped.replace("$", "$$")
    if SAFE_WORD.fullmatch(word):
        return escaped
    for old, new in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\t", "\\t")):
        escaped = escaped.replace(old, new)
    return f'"{escaped}"'


def render_unit(name, command, environment, token, stop_timeout):
    """The unit file for NAME; the token line is how a later run tells whether to restart."""
    lines = [
        "# Managed by splitter.pipeline.stage_service: edits are overwritten.",
        f"{TOKEN_PREFIX}{token}",
        "[Unit]",
        f"Description=splitter service {name}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_systemd_quote(word) for word in command),
    ]
    for key in sorted(environment):
        pair = f"{key}={environment[key]}"
        lines.append("Environment=" + _systemd_quote(pair, expand_dollar=False))
    lines += [
        "Restart=on-failure",
        "RestartSec=1",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={int(stop_timeout)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def unit_token(text):
    """The token recorded in a unit file's comment, or None."""
    for line in (text or "").splitlines():
        if line.startswith(TOKEN_PREFIX):
            return line[len(TOKEN_PREFIX) :]
    return None


class Systemd:
    def __init__(self, module, name):
        self.module = module
        self.name = name
        self.unit = f"{name}.service"
        self.unit_path = os.path.join(UNIT_DIR, self.unit)
        self.systemctl = module.get_bin_path("systemctl", required=True)

    def ctl(self, *args, check=True):
        rc, out, err = self.module.run_command([self.systemctl, *args])
        if check and rc != 0:
            self.module.fail_json(
                msg=f"systemctl {' '.join(args)} failed: {err.strip() or out.strip()}",
                name=self.name,
            )
        return rc, out.strip()

    def active(self):
        return self.ctl("is-active", "--quiet", self.unit, check=False)[0] == 0

    def enabled(self):
        return self.ctl("is-enabled", "--quiet", self.unit, check=False)[0] == 0

    def show(self):
        _, out = self.ctl("show", "-p", "MainPID", "-p", "NRestarts", "-p", "ActiveState",
                          self.unit, check=False)  # fmt: skip
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return values

    def pid(self):
        try:
            return int(self.show().get("MainPID") or 0)
        except ValueError:
            return 0

    def current_unit(self):
        try:
            with open(self.unit_path) as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write_unit(self, text):
        tmp = f"{self.unit_path}.tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.unit_path)

    def journal_tail(self):
        journalctl = self.module.get_bin_path("journalctl")
        if not journalctl:
            return ""
        _, out, _ = self.module.run_command([journalctl, "-u", self.unit, "-n", "30",
                                             "--no-pager"])  # fmt: skip
        return out

    def started(self, params):
        wanted = render_unit(self.name, params["command"], params["environment"],
                             params["token"], params["stop_timeout"])  # fmt: skip
        current = self.current_unit()
        active, enabled = self.active(), self.enabled()
        unit_changed = current != wanted
        restart = active and unit_changed
        changed = unit_changed or not active or not enabled
        result = {"changed": changed, "restarted": restart, "unit_path": self.unit_path,
                  "log_file": None, "token": params["token"]}  # fmt: skip
        if self.module.check_mode or not changed:
            result["pid"] = self.pid() if active and not changed else 0
            return result
        if unit_changed:
            self.write_unit(wanted)
            self.ctl("daemon-reload")
        if restart:
            self.ctl("restart", self.unit)
        self.ctl("enable", "--now", self.unit)
        if params["wait_s"] > 0:
            before = self.show()
            time.sleep(params["wait_s"])
            after = self.show()
            if after.get("ActiveState") != "active" or after.get("MainPID") != before.get(
                "MainPID"
            ):
                self.module.fail_json(
                    msg=f"{self.unit} did not stay up for {params['wait_s']} s",
                    log_tail=self.journal_tail(), name=self.name,
                )  # fmt: skip
        result["pid"] = self.pid()
        return result

    def stopped(self, params):
        active = self.active()
        if active and not self.module.check_mode:
            self.ctl("stop", self.unit)
        return {"changed": active, "restarted": False, "unit_path": self.unit_path,
                "log_file": None, "token": "", "pid": 0}  # fmt: skip

    def absent(self, params):
        exists = self.current_unit() is not None
        active = self.active()
        changed = exists or active
        if changed and not self.module.check_mode:
            if active:
                self.ctl("stop", self.unit)
            self.ctl("disable", self.unit, check=False)
            if exists:
                os.unlink(self.unit_path)
            self.ctl("daemon-reload")
        return {"changed": changed, "restarted": False, "unit_path": self.unit_path,
                "log_file": None, "token": "", "pid": 0}  # fmt: skip


# ---------------------------------------------------------------- splitter-supervise


class Supervisor:
    def __init__(self, module, name, params):
        self.module = module
        self.name = name
        self.state_dir = params["state_dir"]
        self.log_file = params["log_file"] or os.path.join(self.state_dir, f"{name}.log")
        self.exe = params["supervisor"]
        if not self.exe and params["command"]:
            self.exe = os.path.join(os.path.dirname(params["command"][0]), "splitter-supervise")
        self.where = ["--state-dir", self.state_dir, "--name", name]

    def require_exe(self):
        if not self.exe or not os.access(self.exe, os.X_OK):
            self.module.fail_json(
                msg=f"splitter-supervise not found at {self.exe!r}: install the splitter "
                "runtime next to the command, or set supervisor=", name=self.name,
            )  # fmt: skip

    def run(self, action, *extra, ok=(0,)):
        self.require_exe()
        rc, out, err = self.module.run_command([self.exe, action, *self.where, *extra])
        if rc not in ok:
            self.module.fail_json(msg=f"splitter-supervise {action} failed (rc {rc}): "
                                  f"{err.strip() or out.strip()}", name=self.name)  # fmt: skip
        lines = [line for line in out.splitlines() if line.startswith("{")]
        try:
            return rc, json.loads(lines[-1]) if lines else {}
        except ValueError:
            return rc, {}

    def status(self):
        """The state JSON plus alive, verified by the supervisor CLI (it checks the pid)."""
        state_file = os.path.join(self.state_dir, f"{self.name}.json")
        if not os.path.lexists(state_file):
            return {"alive": False, "state": "absent"}
        if not self.exe:  # stopped/absent without a command: the one that started it
            with contextlib.suppress(OSError, ValueError, TypeError, IndexError, KeyError):
                with open(state_file) as handle:
                    started_by = json.load(handle)["command"][0]
                self.exe = os.path.join(os.path.dirname(started_by), "splitter-supervise")
        return self.run("status", ok=(0, 3))[1]

    def log_tail(self, limit=3000):
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - limit))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def base(self, **extra):
        return {"log_file": self.log_file, "restarted": False, "pid": 0, "token": "", **extra}

    def start(self, params):
        extra = ["--log", self.log_file, "--token", params["token"],
                 "--stop-timeout", str(params["stop_timeout"])]  # fmt: skip
        for key in sorted(params["environment"]):
            extra += ["--env", f"{key}={params['environment'][key]}"]
        _, reply = self.run("start", *extra, "--", *params["command"])
        pid = reply.get("child_pid") or 0
        if params["wait_s"] > 0:
            time.sleep(params["wait_s"])
            now = self.status()
            if not now.get("alive") or now.get("child_pid") != pid:
                self.module.fail_json(
                    msg=f"{self.name} did not stay up for {params['wait_s']} s "
                    f"(state {now.get('state', 'absent')}, last exit {now.get('last_exit')})",
                    log_tail=self.log_tail(), name=self.name, log_file=self.log_file,
                )  # fmt: skip
        return pid

    def started(self, params):
        now = self.status()
        if now.get("alive"):
            same = now.get("token") == params["token"] and now.get("command") == params["command"]
            if same:
                return self.base(changed=False, pid=now.get("child_pid") or 0,
                                 token=params["token"])  # fmt: skip
            if self.module.check_mode:
                return self.base(changed=True, restarted=True, token=params["token"])
            self.run("stop")
            return self.base(changed=True, restarted=True, pid=self.start(params),
                             token=params["token"])  # fmt: skip
        if self.module.check_mode:
            return self.base(changed=True, token=params["token"])
        return self.base(changed=True, pid=self.start(params), token=params["token"])

    def stopped(self, params):
        alive = bool(self.status().get("alive"))
        if alive and not self.module.check_mode:
            self.run("stop")
        return self.base(changed=alive)

    def absent(self, params):
        alive = bool(self.status().get("alive"))
        files = [p for p in (os.path.join(self.state_dir, f"{self.name}.json"), self.log_file)
                 if os.path.lexists(p)]  # fmt: skip
        changed = alive or bool(files)
        if changed and not self.module.check_mode:
            if alive:
                self.run("stop")
            for path in files:
                if os.path.lexists(path):
                    os.unlink(path)
        return self.base(changed=changed)


# ---------------------------------------------------------------- main


def choose_manager(module, wanted):
    if wanted != "auto":
        return wanted
    systemd = os.path.isdir("/run/systemd/system") and module.get_bin_path("systemctl")
    return "systemd" if systemd else "supervisor"


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "default": "started",
                      "choices": ["started", "stopped", "absent"]},
            "command": {"type": "list", "elements": "str"},
            "manager": {"type": "str", "default": "auto",
                        "choices": ["auto", "systemd", "supervisor"]},
            "state_dir": {"type": "path"},
            "log_file": {"type": "path"},
            "supervisor": {"type": "path"},
            "token": {"type": "str", "default": "", "no_log": False},
            "environment": {"type": "dict", "default": {}},
            "stop_timeout": {"type": "int", "default": 30},
            "wait_s": {"type": "float", "default": 0.0},
        },
        required_if=[("state", "started", ["command"])],
        supports_check_mode=True,
    )  # fmt: skip
    params = module.params
    name = params["name"]
    if not NAME_RE.fullmatch(name):
        module.fail_json(msg=f"name {name!r}: use letters, digits, '_', '.', '-' only")
    if "\n" in params["token"] or "\r" in params["token"]:
        module.fail_json(msg="token must be one line")
    params["environment"] = {str(k): str(v) for k, v in params["environment"].items()}
    bad = [k for k in params["environment"] if not ENV_KEY_RE.fullmatch(k)]
    if bad:
        module.fail_json(msg=f"environment names must be [A-Za-z_][A-Za-z0-9_]*: {bad}")
    command = params["command"] or []
    if params["state"] == "started" and (not command or not os.path.isabs(command[0])):
        module.fail_json(msg="command[0] must be an absolute path", command=command)
    manager = choose_manager(module, params["manager"])
    if manager == "systemd":
        service = Systemd(module, name)
    else:
        if not params["state_dir"]:
            module.fail_json(msg="state_dir is required with the supervisor manager", name=name)
        service = Supervisor(module, name, params)
    result = getattr(service, params["state"])(params)
    module.exit_json(name=name, manager=manager, **result)


if __name__ == "__main__":
    main()
