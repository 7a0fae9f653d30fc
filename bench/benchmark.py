"""Wall time of `splitter benchmark` (MobileNetV2 per-layer slices, 3 lab devices, b=1,8).

Prints how the time splits: converting slices to LiteRT (cold, then cached), measuring on
the devices (the module's own time, devices in turn since the lab's share CPUs), and the
rest — Ansible, SSH, shipping the bundle, the runtime check, link measurements.
Needs root (it builds a lab). Usage: python bench/benchmark.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    from splitter.benchmark import run_benchmark
    from splitter.examples import write_example_model
    from splitter.lab import LabSpec, lab_down, lab_up
    from splitter.litert_cache import convert_slices
    from splitter.manifest import read_manifest
    from splitter.slicing import slice_model

    spec = LabSpec(name="bench", devices=3, memory=(512 << 20, 1 << 30, 1 << 30),
                   cpus=(0.5, 1.0, 1.0), subnet_index=9)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-benchmark-") as tmp:
        work = Path(tmp)
        model = write_example_model(work / "mobilenetv2.keras", "mobilenetv2")
        slice_model(model, work / "slices")
        manifest = read_manifest(work / "slices")
        cache = work / "litert-cache"
        started = time.perf_counter()
        convert_slices(manifest, cache_dir=cache)
        cold_convert = time.perf_counter() - started
        started = time.perf_counter()
        convert_slices(manifest, cache_dir=cache)
        warm_convert = time.perf_counter() - started
        lab = lab_up(spec)
        try:
            runs = []
            for _ in range(2):  # the first run installs the runtime; the second finds it there
                started = time.perf_counter()
                report = run_benchmark(work / "slices", lab.inventory, [1, 8], work / "p.json")
                runs.append((time.perf_counter() - started, report))
        finally:
            lab_down(spec.name)
    count = len(manifest.slices)
    print(f"MobileNetV2 (96x96, alpha 0.35): {count} slices, 3 lab devices, batch sizes 1 and 8")
    print(f"convert to LiteRT: cold {cold_convert:.1f} s, cached {warm_convert:.2f} s")
    print(f"{'run':<28}{'wall s':>9}{'measuring s':>13}{'rest s':>9}{'rest %':>8}")
    for label, (wall, report) in zip(("first (installs runtime)", "second"), runs, strict=True):
        measuring = sum(report.seconds.values())
        rest = wall - measuring
        print(f"{label:<28}{wall:>9.1f}{measuring:>13.1f}{rest:>9.1f}{100 * rest / wall:>7.0f}%")
    wall, report = runs[-1]
    per_slice_ms = 1000 * sum(report.seconds.values()) / (count * 2 * 3)
    print(f"measuring per slice x batch x device: {per_slice_ms:.0f} ms")
    overhead = (wall - sum(report.seconds.values())) / wall
    print(f"bench: benchmark_wall_mobilenetv2_3dev = {wall:.1f} s (target <= 180)")
    print(f"bench: benchmark_ansible_overhead_share = {overhead:.2f} (target <= 0.5)")
    ratio = warm_convert / cold_convert
    print(f"bench: litert_conversion_cached_vs_cold = {ratio:.3f} x (target <= 0.05)")


if __name__ == "__main__":
    main()
