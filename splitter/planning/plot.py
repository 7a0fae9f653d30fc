"""``configure --plot``: the layer → device map and per-stage time bars, as one PNG."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from splitter.planning.configure import PlanResult


def plot_plan(result: PlanResult, path: str | Path) -> None:
    """Top: which device runs each slice. Bottom: each stage's compute and incoming link ms."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    pb = result.problem
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), gridspec_kw={"height_ratios": [1, 2]})
    colors = plt.get_cmap("tab20")
    names = []
    for i, (d, a, b) in enumerate(result.stages):
        top.barh(0, b - a, left=a, color=colors(i % 20), edgecolor="black")
        top.text((a + b) / 2, 0, pb.devices[d], ha="center", va="center", fontsize=8)
        names.append(f"{i}: {pb.devices[d]}")
    top.set_xlim(0, pb.n_slices)
    top.set_yticks([])
    top.set_xlabel("slice index (layers)")
    top.set_title(f"{result.options.objective} plan, batch {pb.batch_size}")

    compute = [pb.compute_ms(d, a, b) for d, a, b in result.stages]
    links = [float(pb.transfer_in[result.stages[0][0]])] + [
        float(pb.transfer[p[0], s[0], s[1]]) for p, s in pairwise(result.stages)
    ]
    x = range(len(result.stages))
    bottom.bar([i - 0.2 for i in x], compute, width=0.4, label="compute ms")
    bottom.bar([i + 0.2 for i in x], links, width=0.4, label="incoming link ms")
    bottom.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
    bottom.set_ylabel("ms per batch")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
