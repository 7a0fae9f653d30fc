"""Run a whole pipeline as local processes: keys, configs, one process per stage, a gateway.

The embedded default before Ansible deploy exists, and the harness of the tests and the
benchmark. It writes exactly the files a deploy would put on devices (stage.yaml,
gateway.yaml, key files), each on its own 127.0.0.1 ports, and starts the same entry points
(``splitter-stage``/``splitter-gateway`` via ``python -m``). Every process it starts is stopped
on :meth:`LocalPipeline.stop`, on context exit and at interpreter exit.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitter_runtime import config, keys
from splitter_runtime.backends import sha256_file
from splitter_runtime.client import Client
from splitter_runtime.errors import ConfigError, GatewayUnavailable
from splitter_runtime.ports import free_ports
from splitter_runtime.wire import TensorSpec


@dataclass
class StageSpec:
    """One stage to run: a model file (``.tflite`` or ``.keras``) and its tensor specs."""

    name: str
    model_file: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    backend: str = "litert"
    num_threads: int = 1
    batch_size: int = 1
    cpus: list[int] | None = None


def free_port(host: str = "127.0.0.1") -> int:
    """One free port outside the ephemeral range (see :mod:`splitter_runtime.ports`)."""
    return free_ports(1, host)[0]


class LocalPipeline:
    """Keys + configs under ``workdir``; ``start()`` spawns gateway and stages and waits."""

    def __init__(
        self,
        stages: list[StageSpec],
        workdir: str | Path,
        *,
        curve: bool = True,
        host: str = "127.0.0.1",
        client_port: int | None = None,
        heartbeat_interval_ms: int = 250,
        dead_after_ms: int = 1500,
        limits: dict[str, int] | None = None,
        log_level: str = "INFO",
    ) -> None:
        if not stages:
            raise ConfigError("a pipeline needs at least one stage", "check the plan")
        self.stages = stages
        self.workdir = Path(workdir).resolve()
        self.curve = curve
        self.host = host
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.dead_after_ms = dead_after_ms
        self.limits = dict(limits or {})
        self.log_level = log_level
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Any] = {}
        addr = f"tcp://{host}:"
        # distinct ports, all chosen at once: two addresses of one pipeline never collide
        ports = iter(free_ports(3 + 2 * len(stages), host))
        self.client_address = addr + str(client_port or next(ports))
        self.result_address = addr + str(next(ports))
        self.heartbeat_address = addr + str(next(ports))
        self.data_addresses = [addr + str(next(ports)) for _ in stages]
        self.health_addresses = {s.name: addr + str(next(ports)) for s in stages}
        self.keys_dir = self.workdir / "keys"
        self.config_paths: dict[str, Path] = {}
        atexit.register(self.stop)

    # -- files -----------------------------------------------------------------------------
    def key(self, name: str, secret: bool = False) -> Path:
        return self.keys_dir / (f"{name}.key_secret" if secret else f"{name}.key")

    def write(self) -> dict[str, Path]:
        """Generate this run's keys and write gateway.yaml and one stage.yaml per stage."""
        names = ["gateway", "client", "watcher", *[s.name for s in self.stages]]
        if len(set(names)) != len(names):
            raise ConfigError(f"stage names must be unique and not {names[:3]}", "rename stages")
        if self.curve:
            keys.generate(self.keys_dir, names, overwrite=True)
        k = self.key
        n = len(self.stages)
        for i, s in enumerate(self.stages):
            last = i == n - 1
            data = {
                "schema_version": config.SCHEMA_VERSION,
                "kind": "splitter.stage",
                "name": s.name,
                "model": {
                    "file": str(Path(s.model_file).resolve()),
                    "sha256": sha256_file(s.model_file),
                    "backend": s.backend,
                    "num_threads": s.num_threads,
                    "batch_size": s.batch_size,
                },
                "inputs": [t.to_dict() for t in s.inputs],
                "outputs": [t.to_dict() for t in s.outputs],
                "bind": self.data_addresses[i],
                "connect": self.result_address if last else self.data_addresses[i + 1],
                "health_bind": self.health_addresses[s.name],
                "heartbeat_connect": self.heartbeat_address,
                "heartbeat_interval_ms": self.heartbeat_interval_ms,
                "cpus": s.cpus,
                "security": {
                    "secret_key": str(k(s.name, True)),
                    "downstream_key": str(k("gateway" if last else self.stages[i + 1].name)),
                    "heartbeat_key": str(k("gateway")),
                    "allow_upstream": [str(k("gateway" if i == 0 else self.stages[i - 1].name))],
                    "allow_health": [str(k("gateway")), str(k("watcher"))],
                },
                "limits": self.limits,
            }
            if not self.curve:
                data["security"] = {"curve": False}
            self.config_paths[s.name] = config.dump(data, self.workdir / f"{s.name}.stage.yaml")
        gw = {
            "schema_version": config.SCHEMA_VERSION,
            "kind": "splitter.gateway",
            "name": "gateway",
            "client_bind": self.client_address,
            "first_stage": self.data_addresses[0],
            "result_bind": self.result_address,
            "heartbeat_bind": self.heartbeat_address,
            "stages": [
                {"name": s.name, "health": self.health_addresses[s.name]} for s in self.stages
            ],
            "inputs": [t.to_dict() for t in self.stages[0].inputs],
            "outputs": [t.to_dict() for t in self.stages[-1].outputs],
            "dead_after_ms": self.dead_after_ms,
            "security": {
                "secret_key": str(k("gateway", True)),
                "first_stage_key": str(k(self.stages[0].name)),
                "allow_clients": [str(k("client"))],
                "allow_upstream": [str(k(self.stages[-1].name))],
                "allow_heartbeat": [str(k(s.name)) for s in self.stages],
            },
            "limits": self.limits,
        }
        if not self.curve:
            gw["security"] = {"curve": False}
        self.config_paths["gateway"] = config.dump(gw, self.workdir / "gateway.yaml")
        return self.config_paths

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, module: str) -> None:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._logs[name] = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", module, "--config", str(self.config_paths[name])]
        self.procs[name] = subprocess.Popen(
            [*cmd, "--log-level", self.log_level],
            stdout=self._logs[name],
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop them in order
        )

    def log_tail(self, name: str, lines: int = 15) -> str:
        p = self.workdir / "logs" / f"{name}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    def start(self, timeout_s: float = 120.0) -> None:
        """Write files, start the gateway and every stage, wait until all stages are up."""
        if not self.config_paths:
            self.write()
        try:
            self._spawn("gateway", "splitter_runtime.gateway")
            for s in self.stages:
                self._spawn(s.name, "splitter_runtime.stage")
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | str = "no answer from the gateway"
        with self.client(timeout_s=5.0) as c:
            while time.monotonic() < deadline:
                for name, proc in self.procs.items():
                    if proc.poll() is not None:
                        raise ConfigError(
                            f"{name} exited with code {proc.returncode} while starting:\n"
                            + self.log_tail(name),
                            f"see {self.workdir / 'logs' / (name + '.log')}",
                        )
                try:
                    last = c.status(timeout_s=1.0)
                    if last.get("ready"):
                        return
                except Exception as exc:  # GatewayUnavailable/RequestTimeout while it starts
                    last = f"no answer from the gateway ({type(exc).__name__}: {exc})"
                time.sleep(0.1)
        states = (
            {s["name"]: s["state"] for s in last.get("stages", [])}
            if isinstance(last, dict)
            else last
        )
        tails = "\n".join(
            f"--- {name}.log (last lines)\n{self.log_tail(name, 6)}" for name in self.procs
        )
        raise GatewayUnavailable(
            f"the local pipeline was not ready within {timeout_s:g} s; stages: {states}\n{tails}",
            f"see the logs in {self.workdir / 'logs'}",
        )

    def client(self, **kwargs: Any) -> Client:
        """A client holding this run's client key."""
        if self.curve:
            kwargs.setdefault("secret_key", self.key("client", True))
            kwargs.setdefault("server_key", self.key("gateway"))
        return Client(self.client_address, curve=self.curve, **kwargs)

    def health(self, name: str, timeout_s: float = 2.0) -> dict[str, Any]:
        """Ask one stage's health port directly (with the watcher key)."""
        from splitter_runtime.health import query

        kp = keys.load_pair(self.key("watcher", True)) if self.curve else None
        sk = keys.load_public(self.key(name)) if self.curve else None
        return query(self.health_addresses[name], keypair=kp, server_key=sk, timeout_s=timeout_s)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one process (tests: simulate a crash)."""
        self.procs[name].send_signal(sig)

    def restart(self, name: str, timeout_s: float = 10.0) -> None:
        """Start one stage again from its config once its old process is gone (what a
        supervisor does after a crash); returns without waiting for it to serve."""
        old = self.procs[name]
        if old.poll() is None:
            old.wait(timeout_s)
        self._logs.pop(name).close()
        self._spawn(name, "splitter_runtime.stage")

    def stop(self, timeout_s: float = 15.0) -> dict[str, int | None]:
        """Drain and stop: the gateway first (it stops admitting and waits for what is in
        flight), then every stage (each finishes what it holds). Returns exit codes."""
        codes: dict[str, int | None] = {}
        gateway = self.procs.get("gateway")
        if gateway is not None:
            codes["gateway"] = self._terminate(gateway, timeout_s)
        # Nothing is in flight once the gateway has drained: stop the stages together, each
        # still finishing whatever it holds.
        stages = [s.name for s in self.stages if s.name in self.procs]
        for name in stages:
            if self.procs[name].poll() is None:
                self.procs[name].send_signal(signal.SIGTERM)
        for name in stages:  # already signalled: only wait (a second SIGTERM is not sent)
            codes[name] = self._terminate(self.procs[name], timeout_s, signal_first=False)
        for f in self._logs.values():
            f.close()
        self.procs.clear()
        self._logs.clear()
        return codes

    @staticmethod
    def _terminate(
        proc: subprocess.Popen, timeout_s: float, signal_first: bool = True
    ) -> int | None:
        if proc.poll() is None:
            if signal_first:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def __enter__(self) -> LocalPipeline:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
