"""Synthetic profiles: realistic-looking measurements without devices, for tests and benchmarks.

A synthetic profile has the same format as a measured one (docs/formats.md), so everything
downstream (validation, planning, plan files) is exercised exactly as with real devices.
``memory="tight"`` sizes devices so that no single one holds the model and a few slices fit
nowhere but on the larger devices: the regime where "each device at most once" binds.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from splitter.errors import SplitterError
from splitter.profile import DEFAULT_RUNTIME_OVERHEAD_BYTES, PARAM_FACTOR, SCHEMA_VERSION

MEMORY_REGIMES = ("roomy", "tight")


def parse_spec(spec: str) -> tuple[int, int]:
    """Parse ``LAYERSxDEVICES`` (e.g. ``200x8``) as given to ``--synthetic``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", spec)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise SplitterError(
            f"--synthetic '{spec}' is not LAYERSxDEVICES", "write e.g. --synthetic 200x8"
        )
    return int(match.group(1)), int(match.group(2))


def make_synthetic_profile(
    n_slices: int,
    n_devices: int,
    seed: int = 0,
    batch_sizes: tuple[int, ...] = (1, 8),
    memory: str = "roomy",
    backends: tuple[str, ...] = ("litert", "tensorflow"),
    link_scale: float = 1.0,
) -> dict[str, Any]:
    """Return a profile dict (valid against profile.schema.json) with random but plausible costs.

    ``link_scale`` > 1 makes every link that many times faster (bandwidth up, latency down),
    which favours splitting the model over more devices.
    """
    if memory not in MEMORY_REGIMES:
        raise SplitterError(f"memory regime '{memory}' is unknown", f"use one of {MEMORY_REGIMES}")
    rng = np.random.default_rng(seed)
    L, D = n_slices, n_devices
    param = rng.lognormal(mean=np.log(200e3), sigma=1.2, size=L).astype(np.int64)
    cut_bytes = rng.lognormal(mean=np.log(150e3), sigma=1.0, size=L + 1).astype(np.int64)
    act1 = (cut_bytes[:-1] + cut_bytes[1:]) * rng.uniform(1.0, 2.0, size=L)
    work = rng.lognormal(mean=np.log(0.5), sigma=0.8, size=L)  # ms on a reference device

    speed = rng.uniform(0.3, 4.0, size=D)  # ms multiplier per device
    # Per-layer affinity: some devices are relatively better at some layers (like real hardware).
    affinity = rng.uniform(0.7, 1.3, size=(D, L))
    device_backends = [backends[i % len(backends)] for i in range(D)]
    fixed = np.array([DEFAULT_RUNTIME_OVERHEAD_BYTES[b] for b in device_backends], dtype=float)
    factor = np.array([PARAM_FACTOR[b] for b in device_backends])
    bmax = max(batch_sizes)
    model_need = param.sum() * factor + act1.max() * bmax + fixed
    if memory == "roomy":
        usable = model_need * rng.uniform(1.5, 3.0, size=D)
    else:  # each device holds roughly 1/4 .. 4/5 of the weights
        share = rng.uniform(max(1.5 / D, 0.25), 0.8, size=D)
        usable = (param.sum() * factor * share + act1.max() * bmax + fixed) * 1.2

    devices = []
    for d in range(D):
        compute = {}
        for b in batch_sizes:
            scale = 0.35 + 0.65 * b  # batching amortises a fixed part of each call
            median = work * speed[d] * affinity[d] * scale
            p90 = median * rng.uniform(1.02, 1.3, size=L)
            peak = act1 * b
            fits = [True] * L
            if memory == "tight":  # a slice too big alone for this device does not run there
                alone = (peak + param * factor[d] + fixed[d]) * 1.2
                fits = [bool(x) for x in alone <= usable[d]]
            compute[str(b)] = {
                "median_ms": [
                    round(float(m), 6) if f else None for m, f in zip(median, fits, strict=True)
                ],
                "p90_ms": [
                    round(float(m), 6) if f else None for m, f in zip(p90, fits, strict=True)
                ],
                "peak_activation_bytes": [
                    int(a) if f else None for a, f in zip(peak, fits, strict=True)
                ],
                "fits": fits,
            }
        devices.append(
            {
                "name": f"dev{d:02d}",
                "address": f"10.0.{d // 250}.{d % 250 + 2}",
                "usable_memory_bytes": int(usable[d]),
                "cpus": int(rng.choice([2, 4, 8])),
                "backend": device_backends[d],
                "compute": compute,
            }
        )

    names = ["controller"] + [dev["name"] for dev in devices]
    bandwidth = rng.uniform(20e6, 1.2e9, size=len(names))  # per-endpoint NIC speed
    links = []
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                bw = min(bandwidth[i], bandwidth[j]) * rng.uniform(0.7, 1.0) * link_scale
                links.append(
                    {
                        "from": a,
                        "to": b,
                        "bandwidth_bytes_per_s": round(float(bw), 1),
                        "latency_ms": round(float(rng.uniform(0.05, 1.0)) / link_scale, 6),
                    }
                )

    tag = f"synthetic:{L}x{D}:{seed}:{memory}".encode()
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "splitter.profile",
        "synthetic": True,
        "slices": {
            "path": f"synthetic/{L}-slices/manifest.json",
            "sha256": hashlib.sha256(tag).hexdigest(),
            "count": L,
            "cuts": [
                {"tensors": [f"t{k:04d}__0__0"], "bytes_per_sample": int(c)}
                for k, c in enumerate(cut_bytes)
            ],
            "param_bytes": [int(p) for p in param],
        },
        "batch_sizes": sorted(batch_sizes),
        "controller": {"name": "controller", "address": "10.0.0.1"},
        "devices": devices,
        "links": links,
    }
