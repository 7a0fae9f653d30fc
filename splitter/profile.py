"""Read, check and write ``profile.json``: the measurements planning works from.

The profile is self-contained (the slice set's cuts and parameter bytes are copied in), so
planning needs no manifest, no TensorFlow and no devices. Everything is validated on read, and
every error names the file, the field and what was expected (format: docs/formats.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitter.errors import SplitterError

SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).parent / "schemas"
BACKENDS = ("litert", "tensorflow")
# Runtime overhead per backend when the profile does not measure it (docs/formats.md).
DEFAULT_RUNTIME_OVERHEAD_BYTES = {"litert": 40 * 2**20, "tensorflow": 550 * 2**20}
# XNNPACK repacks weights into its own layout: about twice the parameter bytes in memory.
PARAM_FACTOR = {"litert": 2.0, "tensorflow": 1.0}


@dataclass(frozen=True)
class Cut:
    """What crosses the boundary before a slice: tensor names and their bytes per sample."""

    tensors: tuple[str, ...]
    bytes_per_sample: int


@dataclass(frozen=True)
class SliceTimes:
    """One device's measurements at one batch size, one entry per slice (None: did not run)."""

    median_ms: tuple[float | None, ...]
    p90_ms: tuple[float | None, ...]
    peak_activation_bytes: tuple[int | None, ...]
    fits: tuple[bool, ...]


@dataclass(frozen=True)
class Messaging:
    """The runtime's CPU cost of one message on a machine (encode, CURVE, send, receive,
    decode), measured by ``splitter_runtime.msgcost``; zero where the profile has none."""

    fixed_ms: float = 0.0
    ms_per_mb: float = 0.0

    def ms(self, nbytes: float) -> float:
        return self.fixed_ms + self.ms_per_mb * nbytes / 1e6


def _messaging(entry: dict[str, Any] | None) -> Messaging:
    entry = entry or {}
    return Messaging(float(entry.get("fixed_ms", 0.0)), float(entry.get("ms_per_mb", 0.0)))


@dataclass(frozen=True)
class Device:
    """A machine that can run one stage."""

    name: str
    address: str
    usable_memory_bytes: int
    cpus: float
    backend: str
    runtime_overhead_bytes: int
    compute: dict[int, SliceTimes]
    messaging: Messaging = field(default_factory=lambda: Messaging())

    @property
    def param_factor(self) -> float:
        return PARAM_FACTOR[self.backend]


@dataclass(frozen=True)
class Link:
    """A directed link: ``latency_ms + bytes / bandwidth`` per transfer."""

    src: str
    dst: str
    bandwidth_bytes_per_s: float
    latency_ms: float

    def transfer_ms(self, nbytes: float) -> float:
        return self.latency_ms + nbytes / self.bandwidth_bytes_per_s * 1000.0


@dataclass(frozen=True)
class Profile:
    """Everything planning needs, checked for consistency."""

    slices_path: str
    slices_sha256: str
    cuts: tuple[Cut, ...]
    param_bytes: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    controller: str
    controller_address: str
    devices: tuple[Device, ...]
    links: dict[tuple[str, str], Link]
    controller_messaging: Messaging = field(default_factory=lambda: Messaging())
    synthetic: bool = False
    source: str = "<profile>"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_slices(self) -> int:
        return len(self.param_bytes)

    def device(self, name: str) -> Device:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)


def _schema() -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / "profile.schema.json").read_text())


def _where(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top level)"


def _bad(source: str, where: str, expected: str) -> SplitterError:
    return SplitterError(
        f"{source}: field '{where}' is invalid: expected {expected}",
        "re-run `splitter benchmark` (or `configure --synthetic`) to write a fresh profile",
    )


def profile_from_dict(data: Any, source: str = "<profile>") -> Profile:
    """Validate a parsed profile (schema, then cross-field checks) and build a :class:`Profile`."""
    import jsonschema  # local: only needed when reading

    if not isinstance(data, dict):
        raise _bad(source, "(top level)", "a JSON object")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise SplitterError(
            f"{source}: field 'schema_version' is {data.get('schema_version')!r}, expected "
            f"{SCHEMA_VERSION}",
            "write the profile with this version of splitter (`splitter benchmark`)",
        )
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise _bad(source, _where(err.absolute_path), err.message)

    sl = data["slices"]
    n = sl["count"]
    if len(sl["cuts"]) != n + 1:
        raise _bad(source, "slices.cuts", f"{n + 1} cuts (slices.count + 1), got {len(sl['cuts'])}")
    if len(sl["param_bytes"]) != n:
        raise _bad(source, "slices.param_bytes", f"{n} entries, got {len(sl['param_bytes'])}")
    batch_sizes = tuple(data["batch_sizes"])
    if list(batch_sizes) != sorted(set(batch_sizes)):
        raise _bad(source, "batch_sizes", f"ascending distinct sizes, got {list(batch_sizes)}")
    controller = data["controller"]["name"]

    devices: list[Device] = []
    names: set[str] = set()
    for i, d in enumerate(data["devices"]):
        name = d["name"]
        if name in names or name == controller:
            raise _bad(source, f"devices.{i}.name", f"a unique name, '{name}' is used twice")
        names.add(name)
        compute: dict[int, SliceTimes] = {}
        for b in batch_sizes:
            entry = d["compute"].get(str(b))
            if entry is None:
                raise _bad(source, f"devices.{i}.compute", f"a measurement for batch size {b}")
            for key in ("median_ms", "p90_ms", "peak_activation_bytes", "fits"):
                if key in entry and len(entry[key]) != n:
                    raise _bad(
                        source, f"devices.{i}.compute.{b}.{key}", f"{n} entries (one per slice)"
                    )
            fits = tuple(
                bool(f) and m is not None and a is not None
                for f, m, a in zip(
                    entry.get("fits", [True] * n),
                    entry["median_ms"],
                    entry["peak_activation_bytes"],
                    strict=True,
                )
            )
            compute[b] = SliceTimes(
                median_ms=tuple(entry["median_ms"]),
                p90_ms=tuple(entry["p90_ms"]),
                peak_activation_bytes=tuple(entry["peak_activation_bytes"]),
                fits=fits,
            )
        backend = d["backend"]
        devices.append(
            Device(
                name=name,
                address=d["address"],
                usable_memory_bytes=d["usable_memory_bytes"],
                cpus=d["cpus"],
                backend=backend,
                runtime_overhead_bytes=d.get(
                    "runtime_overhead_bytes", DEFAULT_RUNTIME_OVERHEAD_BYTES[backend]
                ),
                compute=compute,
                messaging=_messaging(d.get("messaging")),
            )
        )

    links: dict[tuple[str, str], Link] = {}
    endpoints = names | {controller}
    for i, link in enumerate(data["links"]):
        src, dst = link["from"], link["to"]
        for key, value in (("from", src), ("to", dst)):
            if value not in endpoints:
                raise _bad(
                    source, f"links.{i}.{key}", f"a device name or '{controller}', got '{value}'"
                )
        links[(src, dst)] = Link(src, dst, link["bandwidth_bytes_per_s"], link["latency_ms"])
    for a in sorted(endpoints):
        for b in sorted(endpoints):
            if a != b and (a, b) not in links:
                raise _bad(source, "links", f"a link from '{a}' to '{b}' (every ordered pair)")

    return Profile(
        slices_path=sl["path"],
        slices_sha256=sl["sha256"],
        cuts=tuple(Cut(tuple(c["tensors"]), c["bytes_per_sample"]) for c in sl["cuts"]),
        param_bytes=tuple(sl["param_bytes"]),
        batch_sizes=batch_sizes,
        controller=controller,
        controller_address=data["controller"].get("address", ""),
        devices=tuple(devices),
        links=links,
        controller_messaging=_messaging(data["controller"].get("messaging")),
        synthetic=bool(data.get("synthetic", False)),
        source=source,
        raw=data,
    )


def load_profile(path: str | Path) -> Profile:
    """Read and validate ``profile.json``; errors name the file, the field and the expectation."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise SplitterError(
            f"profile '{p}' does not exist",
            "run `splitter benchmark` first, or make one with `splitter configure --synthetic`",
        ) from None
    except json.JSONDecodeError as exc:
        raise SplitterError(
            f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})", "re-write the profile"
        ) from None
    return profile_from_dict(data, source=str(p))


def save_profile(data: dict[str, Any], path: str | Path) -> None:
    """Write a profile dict after validating it, so a file on disk is always readable."""
    profile_from_dict(data, source=str(path))
    Path(path).write_text(json.dumps(data, indent=1) + "\n")
