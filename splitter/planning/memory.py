"""Why nothing fits: a one-line diagnosis naming what needs how much and who has how much.

The memory model itself lives in problem.py (``Problem.memory_parts``) and docs/formats.md.
"""

from __future__ import annotations

import numpy as np

from splitter.errors import SplitterError
from splitter.planning.problem import Problem


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MiB"


def nothing_fits(problem: Problem) -> SplitterError:
    """The error to raise when no valid plan exists."""
    L, B = problem.n_slices, problem.batch_size
    big = int(np.argmax(problem.usable))
    name, usable = problem.devices[big], problem.usable[big]
    fix = (
        "add a device with more memory, lower --batch-size, lower --memory-headroom, "
        "or allow more stages (--max-stages)"
    )
    # a single slice that fits nowhere is the plainest cause
    for s in range(L):
        if not any(problem.fits(d, s, s + 1) for d in range(problem.n_devices)):
            if np.isinf(problem.activation[big, s]):
                return SplitterError(
                    f"slice {s} could not run on any device at batch {B} (the profile marks it "
                    f"as not fitting; largest device '{name}' has {gib(usable)} usable)",
                    fix,
                )
            need = problem.memory_parts(big, s, s + 1)[0]
            return SplitterError(
                f"layer {s} (slice {s}) alone needs {gib(need)} at batch {B}; largest device "
                f"'{name}' has {gib(usable)} usable",
                fix,
            )
    need = problem.memory_parts(big, 0, L)[0]
    return SplitterError(
        f"layers 0–{L - 1} need {gib(need)} at batch {B}; largest device '{name}' has "
        f"{gib(usable)} usable, and no split over {problem.n_devices} device(s) with at most "
        f"{problem.max_stages} stage(s), one per device, fits either",
        fix,
    )
