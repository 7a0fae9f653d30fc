"""Check a slice set against its model: the chain of slices must give the model's outputs.

Relative error is max |chain - model| / max |model| per output, so the tolerance means the
same for logits and for probabilities. Float32 kernels may fuse differently when a graph
is cut, hence a tolerance instead of bit-equality (in practice slices are bit-exact).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splitter.manifest import Manifest, read_manifest

DEFAULT_TOLERANCE = 1e-5
VERIFY_BATCH = 2


@dataclass
class RangeCheck:
    """One compared range: the chain of slices [start, stop) against a re-cut stage."""

    start: int
    stop: int
    max_abs: float
    max_rel: float


@dataclass
class VerifyReport:
    """Differences found; ``ok`` when every relative difference is within tolerance."""

    max_abs: float
    max_rel: float
    tolerance: float
    slice_count: int
    stages: list[RangeCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        worst = max([self.max_rel, *(s.max_rel for s in self.stages)])
        return bool(worst <= self.tolerance)


def random_inputs(specs: list[dict[str, Any]], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random data shaped like ``specs`` (unknown dims become 8); small ints for int inputs."""
    rng = np.random.default_rng(seed)
    data = {}
    for spec in specs:
        shape = (batch, *[8 if d is None else d for d in spec["shape"][1:]])
        dtype = np.dtype(spec["dtype"])
        if np.issubdtype(dtype, np.floating):
            data[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            data[spec["name"]] = rng.integers(0, 2, shape).astype(bool)
        else:
            data[spec["name"]] = rng.integers(0, 2, shape).astype(dtype)
    return data


def compare(reference: dict[str, Any], candidate: dict[str, Any]) -> tuple[float, float]:
    """Max absolute and max relative difference over same-named tensors."""
    worst_abs = worst_rel = 0.0
    for name, ref in reference.items():
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(candidate[name], dtype=np.float64)
        diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
        if not np.isfinite(diff):  # NaN would compare as "not worse" below
            diff = float("inf")
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(scale, 1e-12))
    return worst_abs, worst_rel


def run_chain(
    manifest: Manifest,
    inputs: dict[str, np.ndarray],
    *,
    unsafe: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Run every slice file in order; returns the values at every cut (cuts[0] = inputs)."""
    from splitter.stages import load_slice

    values = [dict(inputs)]
    total = len(manifest.slices)
    for index in range(total):
        if progress:
            progress(index, total, f"verify slice {index}")
        model = load_slice(manifest, index, unsafe=unsafe)
        names = [spec["name"] for spec in manifest.cut_tensors(index)]
        out = model({name: values[-1][name] for name in names})
        values.append({name: np.asarray(tensor) for name, tensor in out.items()})
    return values


def verify_slice_set(
    slice_dir: Path | str,
    model: Any,
    *,
    unsafe: bool = False,
    ranges: int = 3,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    progress: Callable[[int, int, str], None] | None = None,
) -> VerifyReport:
    """Compare the chained slices with ``model``, and re-cut stages with the chain."""
    from splitter.stages import build_stage_model

    manifest = read_manifest(slice_dir)
    inputs = random_inputs(manifest.data["inputs"], VERIFY_BATCH, seed)
    ordered = [inputs[spec["name"]] for spec in manifest.data["inputs"]]
    reference = model(ordered if len(ordered) > 1 else ordered[0])
    import keras

    reference_flat = keras.tree.flatten(reference)
    output_names = [spec["name"] for spec in manifest.data["outputs"]]
    expected = dict(zip(output_names, reference_flat, strict=True))
    chain = run_chain(manifest, inputs, unsafe=unsafe, progress=progress)
    max_abs, max_rel = compare(expected, chain[-1])
    report = VerifyReport(max_abs, max_rel, tolerance, len(manifest.slices))
    count = len(manifest.slices)
    rng = np.random.default_rng(seed)
    chosen = {(0, count)}
    while len(chosen) < min(ranges + 1, count * (count + 1) // 2):
        start, stop = sorted(rng.choice(count + 1, size=2, replace=False).tolist())
        chosen.add((start, stop))
    for start, stop in sorted(chosen):
        stage = build_stage_model(manifest, start, stop, unsafe=unsafe)
        out = stage(chain[start])
        got = {name: np.asarray(value) for name, value in out.items()}
        stage_abs, stage_rel = compare(chain[stop], got)
        report.stages.append(RangeCheck(start, stop, stage_abs, stage_rel))
    return report
