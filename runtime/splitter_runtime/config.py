"""stage.yaml and gateway.yaml: what one runtime process serves, validated on read.

Flat, explicit YAML a Jinja2 template can render (docs/formats.md, "stage.yaml"). Relative
paths are relative to the config file. Every error names the file, the field and what was
expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from splitter_runtime.errors import ConfigError
from splitter_runtime.wire import DEFAULT_MAX_MESSAGE_BYTES, DTYPES, TensorSpec

SCHEMA_VERSION = 1
BACKENDS = ("litert", "tensorflow", "keras")


@dataclass
class Limits:
    """Bounds on memory and waiting; all waits are bounded."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    hwm: int = 8  # ZeroMQ high-water mark per socket (messages)
    max_queue: int = 8  # requests a stage holds received but not yet computed
    send_timeout_ms: int = 10_000  # a stage gives up on a stuck downstream after this
    drain_timeout_ms: int = 10_000  # SIGTERM: longest time spent finishing in-flight work
    max_in_flight: int = 256  # gateway: requests admitted into the pipeline at once
    request_timeout_ms: int = 30_000  # gateway: default per-request deadline


@dataclass
class Security:
    """Key files; ``curve: false`` turns encryption off (only for debugging on one host)."""

    curve: bool = True
    secret_key: Path | None = None
    downstream_key: Path | None = None  # stage: public key of the socket it connects to
    heartbeat_key: Path | None = None  # stage: public key of the heartbeat watcher
    allow_upstream: list[Path] = field(default_factory=list)  # stage data port / gateway results
    allow_health: list[Path] = field(default_factory=list)  # stage health port
    allow_clients: list[Path] = field(default_factory=list)  # gateway client port
    allow_heartbeat: list[Path] = field(default_factory=list)  # gateway heartbeat port


@dataclass
class StageConfig:
    """One stage process: its model, sockets, keys and limits."""

    path: Path
    name: str
    model_file: Path
    model_sha256: str
    backend: str
    num_threads: int
    batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    bind: str
    connect: str
    health_bind: str
    heartbeat_connect: str | None
    heartbeat_interval_ms: int
    cpus: list[int] | None
    security: Security
    limits: Limits


@dataclass
class GatewayStage:
    name: str
    health: str


@dataclass
class GatewayConfig:
    """The gateway process: client port, first stage, result port, heartbeat port."""

    path: Path
    name: str
    client_bind: str
    first_stage: str
    first_stage_key: Path | None
    result_bind: str
    heartbeat_bind: str
    stages: list[GatewayStage]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dead_after_ms: int
    security: Security
    limits: Limits


class _Reader:
    """Typed field access that names file and field in every error."""

    def __init__(self, path: Path, data: Any, kind: str) -> None:
        self.path = path
        if not isinstance(data, dict):
            raise self.error("", "a mapping at the top level")
        self.data = data
        if data.get("schema_version") != SCHEMA_VERSION:
            raise self.error("schema_version", f"{SCHEMA_VERSION}")
        if data.get("kind") != kind:
            raise self.error("kind", repr(kind))

    def error(self, field_: str, expected: str, got: Any = None) -> ConfigError:
        where = f" field {field_!r}" if field_ else ""
        shown = f" (got {got!r})" if got is not None else ""
        return ConfigError(
            f"{self.path}:{where} expected {expected}{shown}",
            "fix the file (format: docs/formats.md, 'stage.yaml')",
        )

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ..., where: Any = None):
        src = self.data if where is None else where
        if key not in src or src[key] is None:
            if default is ...:
                raise self.error(key, f"a {getattr(typ, '__name__', typ)}", None)
            return default
        value = src[key]
        if typ is int and (type(value) is not int):
            raise self.error(key, "an integer", value)
        if not isinstance(value, typ):
            raise self.error(key, f"a {getattr(typ, '__name__', typ)}", value)
        return value

    def address(self, key: str, where: Any = None, optional: bool = False) -> str | None:
        value = self.get(key, str, None if optional else ..., where)
        if value is not None and not value.startswith(("tcp://", "ipc://", "inproc://")):
            raise self.error(key, "a ZeroMQ address like tcp://127.0.0.1:5601", value)
        return value

    def file(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.error(key, "a file path", value)
        p = Path(value)
        return p if p.is_absolute() else (self.path.parent / p)

    def specs(self, key: str) -> list[TensorSpec]:
        items = self.get(key, list)
        out = []
        for i, item in enumerate(items):
            f = f"{key}[{i}]"
            if not isinstance(item, dict):
                raise self.error(f, "{name, dtype, shape}", item)
            name, dtype, shape = item.get("name"), item.get("dtype"), item.get("shape")
            if not isinstance(name, str) or not name:
                raise self.error(f + ".name", "a tensor name", name)
            if dtype not in DTYPES:
                raise self.error(f + ".dtype", f"one of {sorted(DTYPES)}", dtype)
            if not isinstance(shape, list) or not all(
                d is None or (type(d) is int and d >= 0) for d in shape
            ):
                raise self.error(f + ".shape", "a list of ints or null", shape)
            out.append(TensorSpec(name, dtype, tuple(shape)))
        if not out:
            raise self.error(key, "at least one tensor", items)
        return out

    def limits(self) -> Limits:
        raw = self.get("limits", dict, {})
        lim = Limits()
        for key in raw:
            if not hasattr(lim, key):
                raise self.error(f"limits.{key}", f"one of {sorted(vars(lim))}", key)
            value = raw[key]
            if type(value) is not int or value <= 0:
                raise self.error(f"limits.{key}", "a positive integer", value)
            setattr(lim, key, value)
        return lim

    def security(self) -> Security:
        raw = self.get("security", dict, {})
        sec = Security(curve=bool(raw.get("curve", True)))
        for key in ("secret_key", "downstream_key", "heartbeat_key"):
            if raw.get(key) is not None:
                setattr(sec, key, self.file(raw[key], f"security.{key}"))
        for key in ("allow_upstream", "allow_health", "allow_clients", "allow_heartbeat"):
            items = raw.get(key) or []
            if not isinstance(items, list):
                raise self.error(f"security.{key}", "a list of public key files", items)
            setattr(sec, key, [self.file(v, f"security.{key}") for v in items])
        if sec.curve and sec.secret_key is None:
            raise self.error("security.secret_key", "this process's <name>.key_secret file")
        return sec


def _load_yaml(path: str | Path) -> tuple[Path, Any]:
    p = Path(path).resolve()
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist", "pass the path of a stage.yaml")
    try:
        return p, yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}", "fix the syntax") from None


def load_stage(path: str | Path) -> StageConfig:
    """Read and validate a stage.yaml."""
    p, data = _load_yaml(path)
    r = _Reader(p, data, "splitter.stage")
    model = r.get("model", dict)
    backend = r.get("backend", str, where=model)
    if backend not in BACKENDS:
        raise r.error("model.backend", f"one of {list(BACKENDS)}", backend)
    sha = r.get("sha256", str, where=model)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise r.error("model.sha256", "64 lowercase hex digits", sha)
    cpus = r.get("cpus", list, None)
    if cpus is not None and not all(type(c) is int and c >= 0 for c in cpus):
        raise r.error("cpus", "a list of CPU numbers", cpus)
    cfg = StageConfig(
        path=p,
        name=r.get("name", str),
        model_file=r.file(r.get("file", str, where=model), "model.file"),
        model_sha256=sha,
        backend=backend,
        num_threads=r.get("num_threads", int, 1, where=model),
        batch_size=r.get("batch_size", int, 1, where=model),
        inputs=r.specs("inputs"),
        outputs=r.specs("outputs"),
        bind=r.address("bind"),
        connect=r.address("connect"),
        health_bind=r.address("health_bind"),
        heartbeat_connect=r.address("heartbeat_connect", optional=True),
        heartbeat_interval_ms=r.get("heartbeat_interval_ms", int, 500),
        cpus=cpus,
        security=r.security(),
        limits=r.limits(),
    )
    if cfg.num_threads < 1 or cfg.batch_size < 1 or cfg.heartbeat_interval_ms < 10:
        raise r.error("model.num_threads/batch_size, heartbeat_interval_ms", "≥ 1, ≥ 1, ≥ 10")
    if cfg.security.curve and cfg.security.downstream_key is None:
        raise r.error("security.downstream_key", "the public key file of `connect`'s server")
    if cfg.security.curve and cfg.heartbeat_connect and cfg.security.heartbeat_key is None:
        raise r.error("security.heartbeat_key", "the public key file of the heartbeat watcher")
    return cfg


def load_gateway(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway.yaml."""
    p, data = _load_yaml(path)
    r = _Reader(p, data, "splitter.gateway")
    stages = []
    for i, item in enumerate(r.get("stages", list)):
        if not isinstance(item, dict):
            raise r.error(f"stages[{i}]", "{name, health}", item)
        stages.append(GatewayStage(r.get("name", str, where=item), r.address("health", where=item)))
    sec = r.security()
    raw_sec = data.get("security") or {}
    fsk = raw_sec.get("first_stage_key")
    cfg = GatewayConfig(
        path=p,
        name=r.get("name", str, "gateway"),
        client_bind=r.address("client_bind"),
        first_stage=r.address("first_stage"),
        first_stage_key=r.file(fsk, "security.first_stage_key") if fsk else None,
        result_bind=r.address("result_bind"),
        heartbeat_bind=r.address("heartbeat_bind"),
        stages=stages,
        inputs=r.specs("inputs"),
        outputs=r.specs("outputs"),
        dead_after_ms=r.get("dead_after_ms", int, 2000),
        security=sec,
        limits=r.limits(),
    )
    if sec.curve and cfg.first_stage_key is None:
        raise r.error("security.first_stage_key", "the first stage's public key file")
    return cfg


def dump(data: dict[str, Any], path: str | Path) -> Path:
    """Write a config mapping as YAML (what a Jinja2 template would render)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p
