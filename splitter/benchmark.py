"""`splitter benchmark`: measure every slice on every device, and the links, into a profile.

The controller converts the slices to LiteRT (cached), packs them in one tar (one copy per
device instead of one per slice), and runs ``playbooks/benchmark.yml`` once: one module call
per device times every slice, so Ansible's per-task overhead is paid a handful of times, not
once per slice. The playbook's raw results become ``profile.json``.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from splitter.ansible_run import EventHandler, check_inventory, run_playbook
from splitter.errors import SplitterError
from splitter.manifest import Manifest, read_manifest

RESULTS_KIND = "splitter.benchmark-results"


@dataclass
class BenchmarkReport:
    """The profile written, who was measured, and who was not (with the reason)."""

    profile_path: Path
    profile: dict[str, Any]
    unavailable: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def make_bundle(
    manifest: Manifest,
    path: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Pack every slice's LiteRT file and an index (inputs, sizes, checksums) into one tar."""
    from splitter.checksums import sha256_of
    from splitter.litert_cache import convert_slices

    conversions = convert_slices(manifest, progress=progress)
    failed = [c for c in conversions if not c.ok]
    if failed:
        first = failed[0]
        raise SplitterError(
            f"{len(failed)} slice(s) do not convert to LiteRT (first: slice {first.index}, "
            f"{first.reason}); benchmarking with the TensorFlow backend is not supported yet",
            "replace the layers named in the reason with TFLite-compatible ones",
        )
    index = {"schema_version": 1, "manifest_sha256": manifest.sha256(), "slices": []}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for conversion, entry in zip(conversions, manifest.slices, strict=True):
            name = f"slice_{entry['index']:04d}.tflite"
            archive.add(str(conversion.path), arcname=name)
            index["slices"].append(
                {
                    "index": entry["index"],
                    "file": name,
                    "tflite_sha256": sha256_of(conversion.path),
                    "inputs": entry["inputs"],
                    "param_bytes": entry["param_bytes"],
                    "activation_bytes_per_sample": entry["activation_bytes_per_sample"],
                }
            )
        whole = whole_model_tflite(manifest)
        if whole is not None:
            archive.add(str(whole), arcname="whole.tflite")
            index["whole"] = {
                "file": "whole.tflite",
                "tflite_sha256": sha256_of(whole),
                "inputs": manifest.slices[0]["inputs"],
                "param_bytes": sum(entry["param_bytes"] for entry in manifest.slices),
                "activation_bytes_per_sample": max(
                    entry["activation_bytes_per_sample"] for entry in manifest.slices
                ),
            }
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def whole_model_tflite(manifest: Manifest) -> Path | None:
    """The whole model re-cut as one LiteRT file (cached by the manifest's sha256), or None
    when it does not convert.

    Timing slices one by one overstates what a stage costs: every slice pays a call and
    copies its inputs and outputs, which a stage (one fused model) does not. The whole model's
    time on each device turns the slice timings into stage estimates (see calibrate()).
    """
    from splitter.litert_cache import default_cache_dir
    from splitter.stages import build_stage_model, convert_to_tflite

    cache = default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"whole-{manifest.sha256()}.tflite"
    failed = cache / f"whole-{manifest.sha256()}.failed"
    if path.is_file():
        return path
    if failed.exists():
        return None
    result = convert_to_tflite(build_stage_model(manifest, 0, len(manifest.slices)), path)
    if result.path is None:
        failed.write_text(str(getattr(result, "reason", "")))
        return None
    return Path(result.path)


def calibrate(compute: dict[str, Any]) -> dict[str, Any]:
    """Scale one device's slice timings so that they add up to the whole model's time.

    The scale (whole / Σ slices, per batch size) applies to every slice alike: a stage's
    estimate is then its share of the whole model's measured time. The raw figures stay in
    ``calibration`` so nothing measured is lost.
    """
    out = {}
    for batch, table in compute.items():
        table = dict(table)
        whole = table.pop("whole_median_ms", None)
        whole_p90 = table.pop("whole_p90_ms", None)
        medians = table["median_ms"]
        total = sum(m for m in medians if m is not None)
        if whole is not None and total > 0 and all(m is not None for m in medians):
            scale = whole / total
            p90_total = sum(p for p in table["p90_ms"] if p is not None)
            p90_scale = (whole_p90 / p90_total) if whole_p90 and p90_total else scale
            table["median_ms"] = [round(m * scale, 6) for m in medians]
            table["p90_ms"] = [None if p is None else round(p * p90_scale, 6)
                               for p in table["p90_ms"]]  # fmt: skip
            table["calibration"] = {
                "whole_median_ms": whole, "slices_sum_ms": round(total, 4),
                "scale": round(scale, 6),
            }  # fmt: skip
        out[batch] = table
    return out


def run_benchmark(
    slice_dir: Path | str,
    inventory: Path | str,
    batch_sizes: list[int],
    output: Path | str,
    *,
    on_event: EventHandler | None = None,
    on_convert: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> BenchmarkReport:
    """Run the benchmark playbook on ``inventory`` and write ``output`` (profile.json)."""
    from splitter.facts import gather_facts
    from splitter.wheelhouse import prepare_wheelhouse

    manifest = read_manifest(slice_dir)
    batch_sizes = _check_batch_sizes(batch_sizes)
    inventory = check_inventory(inventory)
    with tempfile.TemporaryDirectory(prefix="splitter-benchmark-") as tmp:
        work = Path(tmp)
        bundle = make_bundle(manifest, work / "bundle.tar", progress=on_convert)
        facts = gather_facts(inventory)
        if not facts.devices:
            raise SplitterError(
                "no device could be reached: "
                + "; ".join(f"{n}: {r}" for n, r in facts.unavailable.items()),
                "check the inventory's addresses and SSH access (`splitter facts -i ...`)",
            )
        overlay = {"all": {"hosts": {}}}
        for name, device in facts.devices.items():
            wheelhouse = prepare_wheelhouse(
                device["python"]["version"], device["architecture"], "litert"
            )
            overlay["all"]["hosts"][name] = {"runtime_wheelhouse": str(wheelhouse)}
        (work / "wheelhouses.yml").write_text(yaml.safe_dump(overlay))
        results_path = work / "results.json"
        result = run_playbook(
            "benchmark",
            [inventory, work / "wheelhouses.yml"],
            {
                "benchmark_bundle": str(bundle),
                "benchmark_batch_sizes": batch_sizes,
                "benchmark_output": str(results_path),
            },
            on_event=on_event,
            limit=",".join(facts.devices),
            cancel=cancel,
        )
        unavailable = dict(facts.unavailable)
        for name, outcome in result.failed_hosts.items():
            unavailable[name] = f"{outcome.status} in '{outcome.task}': {outcome.message}"
        if not results_path.exists():
            raise SplitterError(
                "the benchmark did not finish on any device: "
                + "; ".join(f"{n}: {r}" for n, r in unavailable.items()),
                "fix the reported hosts and re-run `splitter benchmark`",
            )
        results = json.loads(results_path.read_text())
    profile = profile_from_results(manifest, results, unavailable)
    output = Path(output)
    from splitter.profile import save_profile

    save_profile(profile, output)
    seconds = {n: d["slices"]["seconds"] for n, d in results["devices"].items()}
    return BenchmarkReport(output, profile, unavailable, seconds)


def _check_batch_sizes(batch_sizes: list[int]) -> list[int]:
    sizes = sorted(set(batch_sizes))
    if not sizes or sizes[0] < 1:
        raise SplitterError(
            f"batch sizes {batch_sizes} are not positive integers", "e.g. --batch-sizes 1,8"
        )
    return sizes


def profile_from_results(
    manifest: Manifest, results: dict[str, Any], unavailable: dict[str, str] | None = None
) -> dict[str, Any]:
    """Turn the playbook's raw results into a profile (docs/formats.md, profile.json)."""
    if results.get("kind") != RESULTS_KIND:
        raise SplitterError(
            "the results file is not the benchmark playbook's output (kind "
            f"{results.get('kind')!r})",
            "pass the file written by playbooks/benchmark.yml's benchmark_output",
        )
    devices, links = [], []
    controller_address = "127.0.0.1"
    for name, record in sorted(results["devices"].items()):
        facts, slices = record["facts"], record["slices"]
        controller_address = facts.get("controller_address", controller_address)
        devices.append(
            {
                "name": name,
                "address": record["address"],
                "cpus": facts["cpu"]["effective"],
                "backend": slices["backend"],
                "usable_memory_bytes": facts["memory"]["usable_bytes"],
                "runtime_overhead_bytes": slices["runtime_overhead_bytes"],
                "compute": calibrate(slices["compute"]),
                **({"messaging": slices["messaging"]} if slices.get("messaging") else {}),
            }
        )
        links += [_link(name, link) for link in record["links"] if "error" not in link]
    links += [
        _link("controller", link) for link in results["controller"]["links"] if "error" not in link
    ]
    return {
        "schema_version": 1,
        "kind": "splitter.profile",
        "synthetic": False,
        "slices": {
            "path": str(manifest.path.resolve()),
            "sha256": manifest.sha256(),
            "count": len(manifest.slices),
            "cuts": [
                {"tensors": cut["tensors"], "bytes_per_sample": cut["bytes_per_sample"]}
                for cut in manifest.cuts
            ],
            "param_bytes": [entry["param_bytes"] for entry in manifest.slices],
        },
        "batch_sizes": results["batch_sizes"],
        "controller": {
            "name": "controller",
            "address": controller_address,
            **_controller_messaging(),
        },
        "devices": devices,
        "links": links,
        "unavailable": [
            {"name": name, "reason": reason} for name, reason in sorted((unavailable or {}).items())
        ],
    }


def _controller_messaging() -> dict[str, Any]:
    """This machine's per-message runtime cost (the gateway runs here), when measurable."""
    try:
        from splitter_runtime.msgcost import measure
    except ImportError:
        return {}
    return {"messaging": measure()}


def _link(source: str, link: dict[str, Any]) -> dict[str, Any]:
    return {
        "from": source,
        "to": link["to"],
        "bandwidth_bytes_per_s": link["bandwidth_bytes_per_s"],
        "latency_ms": link["latency_ms"],
    }
