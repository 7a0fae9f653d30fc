"""Write and read ``plan.yaml`` (format: docs/formats.md; schema: schemas/plan.schema.json)."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from splitter.errors import SplitterError
from splitter.planning.configure import PlanResult
from splitter.planning.problem import evaluate

SCHEMA_VERSION = 1
SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "plan.schema.json"


def plan_document(
    result: PlanResult, profile_path: str = "", profile_sha256: str = ""
) -> dict[str, Any]:
    """The plan as the dict written to plan.yaml."""
    pb, profile = result.problem, result.problem.profile
    lat, bot = evaluate(pb, result.stages)
    ctl, B = profile.controller, pb.batch_size
    stages, terms = [], []
    names = [pb.devices[d] for d, _, _ in result.stages]
    for i, (d, a, b) in enumerate(result.stages):
        dev = profile.device(pb.devices[d])
        t_in = (
            float(pb.transfer_in[d])
            if i == 0
            else float(pb.transfer[result.stages[i - 1][0], d, a])
        )
        t_out = (
            float(pb.transfer_out[d])
            if i == len(result.stages) - 1
            else float(pb.transfer[d, result.stages[i + 1][0], b])
        )
        needed, act, param, runtime = pb.memory_parts(d, a, b)
        compute = pb.compute_ms(d, a, b)
        terms += [(t_in, f"link {ctl if i == 0 else names[i - 1]} → {dev.name}"),
                  (compute, f"stage {i} compute on {dev.name}")]  # fmt: skip
        stages.append(
            {
                "index": i,
                "device": dev.name,
                "address": dev.address,
                "backend": dev.backend,
                "start": a,
                "stop": b,
                "inputs": list(profile.cuts[a].tensors),
                "outputs": list(profile.cuts[b].tensors),
                "receives_from": ctl if i == 0 else names[i - 1],
                "sends_to": ctl if i == len(names) - 1 else names[i + 1],
                "compute_ms": round(compute, 6),
                "compute_p90_ms": round(float(pb.prefix_p90_ms[d, b] - pb.prefix_p90_ms[d, a]), 6),
                "bytes_in": profile.cuts[a].bytes_per_sample * B,
                "bytes_out": profile.cuts[b].bytes_per_sample * B,
                "transfer_in_ms": round(t_in, 6),
                "transfer_out_ms": round(t_out, 6),
                "memory": {
                    "needed_bytes": int(needed),
                    "usable_bytes": int(pb.usable[d]),
                    "activation_bytes": int(act),
                    "param_bytes": int(param),
                    "runtime_bytes": int(runtime),
                },
            }
        )
    terms.append((float(pb.transfer_out[result.stages[-1][0]]), f"link {names[-1]} → {ctl}"))
    search = result.search
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "splitter.plan",
        "objective": result.options.objective,
        "batch_size": B,
        "batch_size_interpolated": pb.interpolated,
        "slices": {
            "path": profile.slices_path,
            "sha256": profile.slices_sha256,
            "count": pb.n_slices,
        },
        "profile": {"path": profile_path, "sha256": profile_sha256},
        "memory_headroom": pb.headroom,
        "controller": {"name": ctl, "address": profile.controller_address},
        "predicted": {
            "latency_ms": round(lat, 6),
            "bottleneck_ms": round(bot, 6),
            "bottleneck": max(terms)[1],
            "throughput_rps": round(B * 1000.0 / bot, 6),
        },
        "solver": {
            "method": "exact-search",
            "optimal": bool(search.optimal),
            "lower_bound_ms": round(float(search.lower_bound), 6),
            "gap_ms": round(float(search.gap), 6),
            "wall_ms": round(search.wall_s * 1000.0, 3),
        },
        "notes": list(result.notes),
        "stages": stages,
    }


def _validate(data: Any, source: str) -> dict[str, Any]:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
        raise SplitterError(
            f"{source}: field 'schema_version' is {data.get('schema_version')!r}, expected "
            f"{SCHEMA_VERSION}",
            "re-run `splitter configure` with this version of splitter",
        )
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(data),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise SplitterError(
            f"{source}: field '{where}' is invalid: expected {err.message}",
            "re-run `splitter configure` to write a fresh plan",
        )
    stages = data["stages"]
    for i, (s, t) in enumerate(pairwise(stages)):
        if s["stop"] != t["start"]:
            raise SplitterError(
                f"{source}: field 'stages.{i + 1}.start' is {t['start']}, expected {s['stop']} "
                "(stages must be contiguous)",
                "re-run `splitter configure`",
            )
    devices = [s["device"] for s in stages]
    if len(set(devices)) != len(devices):
        raise SplitterError(
            f"{source}: field 'stages' uses a device twice, expected each device at most once",
            "re-run `splitter configure`",
        )
    return data


def write_plan(document: dict[str, Any], path: str | Path) -> None:
    """Validate, then write: a plan on disk is always one the runtime can read."""
    _validate(document, str(path))
    Path(path).write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read and validate plan.yaml; errors name the file, the field and the expectation."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise SplitterError(
            f"plan '{p}' does not exist", "run `splitter configure` first"
        ) from None
    except yaml.YAMLError as exc:
        raise SplitterError(f"{p}: not valid YAML ({exc})", "re-run `splitter configure`") from None
    return _validate(data, str(p))
