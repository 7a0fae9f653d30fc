"""``splitter configure``: profile.json in, plan.yaml out, with baselines side by side."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from splitter.cli.app import app, console, fail
from splitter.errors import SplitterError


def _names(value: str | None) -> list[str] | None:
    return [n.strip() for n in value.split(",") if n.strip()] if value else None


@app.command()
def configure(
    profile: Path = typer.Argument(..., help="profile.json (from `splitter benchmark`)."),
    output: Path = typer.Option(
        Path("plan.yaml"), "-o", "--output", help="Where to write the plan."
    ),
    objective: str = typer.Option("latency", help="latency | throughput (batch-pipelined)."),
    batch_size: int | None = typer.Option(None, help="Default: the smallest profiled batch size."),
    devices: str | None = typer.Option(None, help="Only these devices (comma-separated)."),
    exclude: str | None = typer.Option(None, help="Never these devices (comma-separated)."),
    max_stages: int | None = typer.Option(None, help="At most this many stages."),
    memory_headroom: float = typer.Option(0.2, help="Keep this fraction of memory spare."),
    time_budget: float = typer.Option(5.0, help="Seconds the exact search may take."),
    slices: Path | None = typer.Option(
        None, help="manifest.json: refuse the profile if it was measured on another slice set."
    ),
    plot: Path | None = typer.Option(None, help="Also draw the plan as a PNG here."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of tables."),
    synthetic: str | None = typer.Option(
        None, help="LAYERSxDEVICES: first write a synthetic PROFILE (no devices needed)."
    ),
    seed: int = typer.Option(0, help="Random seed for --synthetic."),
    tight_memory: bool = typer.Option(False, help="--synthetic: devices too small for the model."),
) -> None:
    """Place contiguous slice ranges on devices: optimal latency or throughput, memory-safe."""
    from splitter.checksums import sha256_of
    from splitter.planning import PlanOptions, make_plan, plan_document, write_plan
    from splitter.planning.configure import check_slice_set, plan_summary
    from splitter.profile import load_profile, save_profile

    try:
        if synthetic:
            from splitter.synthetic import make_synthetic_profile, parse_spec

            layers, count = parse_spec(synthetic)
            memory = "tight" if tight_memory else "roomy"
            save_profile(make_synthetic_profile(layers, count, seed, memory=memory), profile)
            console.print(f"wrote synthetic profile {profile} ({layers} slices × {count} devices)")
        prof = load_profile(profile)
        if slices is not None:
            check_slice_set(prof, slices)
        options = PlanOptions(
            objective=objective,
            batch_size=batch_size,
            devices=_names(devices),
            exclude=_names(exclude),
            max_stages=max_stages,
            memory_headroom=memory_headroom,
            time_budget_s=time_budget,
        )
        result = make_plan(prof, options)
        write_plan(plan_document(result, str(profile), sha256_of(profile)), output)
        if plot is not None:
            from splitter.planning.plot import plot_plan

            plot_plan(result, plot)
    except SplitterError as err:
        fail(err)
        return
    if as_json:
        print(json.dumps(plan_summary(result), indent=1))
        return
    _render(result, output, plot)


def _render(result, output: Path, plot: Path | None) -> None:
    from splitter.planning.memory import gib

    pb = result.problem
    table = Table(title=f"plan ({result.options.objective}, batch {pb.batch_size})")
    for col in ("stage", "device", "backend", "slices", "compute ms", "link in ms", "memory"):
        table.add_column(col)
    for i, (d, a, b) in enumerate(result.stages):
        prev = result.stages[i - 1][0] if i else None
        link = pb.transfer_in[d] if prev is None else pb.transfer[prev, d, a]
        need = pb.memory_parts(d, a, b)[0]
        dev = pb.profile.device(pb.devices[d])
        table.add_row(
            str(i), dev.name, dev.backend, f"{a}–{b - 1}", f"{pb.compute_ms(d, a, b):.2f}",
            f"{link:.2f}", f"{gib(need)} / {gib(pb.usable[d])}",
        )  # fmt: skip
    console.print(table)

    compare = Table(title="compared with baselines (same profile)")
    for col in ("plan", "stages", "latency ms", "throughput req/s"):
        compare.add_column(col)
    rows = [("chosen", result.stages), *result.baselines.items()]
    for name, plan in rows:
        cost = result.cost(plan)
        if cost is None:
            compare.add_row(name, "-", "does not fit", "-")
        else:
            rps = pb.batch_size * 1000.0 / cost[1]
            compare.add_row(name, str(len(plan)), f"{cost[0]:.2f}", f"{rps:.1f}")
    console.print(compare)
    s = result.search
    status = "optimal" if s.optimal else f"within {s.gap:.3f} of optimal (budget ran out)"
    console.print(f"solver: {status}, {s.wall_s * 1000:.0f} ms")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {output}" + (f" and {plot}" if plot else ""))
    console.print(f"next: run it with `splitter run-local {output}`")
