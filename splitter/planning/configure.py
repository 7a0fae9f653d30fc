"""``configure`` as a library call: profile + options in, a plan (and its baselines) out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitter.checksums import sha256_of
from splitter.errors import SplitterError
from splitter.planning.baselines import baselines
from splitter.planning.memory import nothing_fits
from splitter.planning.problem import Problem, Stage, build_problem, evaluate, select_devices
from splitter.planning.search import OBJECTIVES, SearchResult, exact_search
from splitter.profile import Profile


@dataclass
class PlanOptions:
    """What ``splitter configure`` lets a user choose."""

    objective: str = "latency"
    batch_size: int | None = None  # default: the smallest profiled batch size
    devices: list[str] | None = None
    exclude: list[str] | None = None
    max_stages: int | None = None
    memory_headroom: float = 0.2
    time_budget_s: float = 5.0


@dataclass
class PlanResult:
    """The chosen plan, how it was found, and the baselines it is compared with."""

    problem: Problem
    options: PlanOptions
    search: SearchResult
    stages: list[Stage]
    baselines: dict[str, list[Stage] | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def cost(self, stages: list[Stage] | None) -> tuple[float, float] | None:
        return evaluate(self.problem, stages) if stages else None


def make_plan(profile: Profile, options: PlanOptions) -> PlanResult:
    """Solve placement exactly (or state the gap if the time budget ran out)."""
    if options.objective not in OBJECTIVES:
        raise SplitterError(
            f"--objective '{options.objective}' is unknown", "use --objective latency or throughput"
        )
    batch = options.batch_size or profile.batch_sizes[0]
    names = select_devices(profile, options.devices, options.exclude)
    problem = build_problem(
        profile, batch, names, headroom=options.memory_headroom, max_stages=options.max_stages
    )
    notes = []
    if problem.interpolated:
        notes.append(
            f"batch size {batch} was not measured: compute times and activation memory are "
            f"interpolated linearly between the profiled sizes {list(profile.batch_sizes)}"
        )
    base = baselines(problem, options.objective)
    incumbents = [p for p in base.values() if p]
    result = exact_search(problem, options.objective, options.time_budget_s, incumbents)
    if result.stages is None:
        if result.optimal:
            raise nothing_fits(problem)
        raise SplitterError(
            f"no valid plan found within the {options.time_budget_s:g} s search budget (none "
            "was proven impossible either)",
            "raise --time-budget, or make it easier: fewer --devices, a smaller --batch-size",
        )
    if not result.optimal:
        unit = "ms latency" if options.objective == "latency" else "ms bottleneck"
        notes.append(
            f"search budget of {options.time_budget_s:g} s ran out: this plan is within "
            f"{result.gap:.3f} {unit} of the optimum (proven lower bound "
            f"{result.lower_bound:.3f}); raise --time-budget to close the gap"
        )
    elif options.objective == "throughput" and not result.stats.get("latency_tie_break_proven"):
        notes.append(
            "throughput is optimal; among plans equally fast, this one's latency was not "
            "proven lowest within the search budget"
        )
    return PlanResult(problem, options, result, result.stages, base, notes)


def check_slice_set(profile: Profile, manifest: str | Path) -> None:
    """Refuse a profile measured on another slice set than ``manifest``."""
    digest = sha256_of(manifest)
    if digest != profile.slices_sha256:
        raise SplitterError(
            f"{profile.source} was measured on slice set {profile.slices_path} "
            f"(sha256 {profile.slices_sha256[:12]}…), not on {manifest} (sha256 {digest[:12]}…)",
            "re-run `splitter benchmark` on these slices, or pass the manifest it was made from",
        )


def plan_summary(result: PlanResult) -> dict[str, Any]:
    """Machine-readable summary (``configure --json``)."""
    lat, bot = evaluate(result.problem, result.stages)
    return {
        "objective": result.options.objective,
        "latency_ms": lat,
        "bottleneck_ms": bot,
        "throughput_rps": result.problem.batch_size * 1000.0 / bot,
        "optimal": result.search.optimal,
        "gap": result.search.gap,
        "stages": [
            {"device": result.problem.devices[d], "start": a, "stop": b}
            for d, a, b in result.stages
        ],
        "baselines": {
            name: None
            if plan is None
            else dict(zip(("latency_ms", "bottleneck_ms"), result.cost(plan) or (), strict=True))
            for name, plan in result.baselines.items()
        },
        "notes": result.notes,
    }
