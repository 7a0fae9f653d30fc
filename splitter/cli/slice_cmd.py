"""`splitter slice`: cut a model into per-node slices, optionally verified."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from splitter.cli.app import app, console, fail, import_tensorflow_quietly
from splitter.errors import SplitterError


@app.command("slice")
def slice_command(
    model: Path = typer.Argument(..., help="The trained model: a .keras file (or legacy .h5)."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder to write the slice set to."),
    verify: bool = typer.Option(
        False, "--verify", help="Check the chained slices (and re-cut stages) against the model."
    ),
    unsafe: bool = typer.Option(
        False, "--unsafe", help="Load models with Lambda layers (runs their Python code)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT even if it is not a slice set."),
) -> None:
    """Cut MODEL into one sub-model per layer call and write OUT/manifest.json."""
    import_tensorflow_quietly()
    from splitter.slicing import slice_model

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[what]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("loading", total=None, what="")

            def progress(done: int, total: int, what: str) -> None:
                label = "verifying" if what.startswith("verify") else "slicing"
                bar.update(task, description=label, completed=done, total=total, what=what)

            result = slice_model(
                model, out, unsafe=unsafe, force=force, verify=verify, progress=progress
            )
    except SplitterError as error:
        fail(error)
        return
    console.print(
        f"[green]✓[/] sliced [bold]{result.model_name}[/] into {result.slice_count} slices "
        f"→ {result.directory}/manifest.json"
    )
    if result.verification is not None:
        report = result.verification
        table = Table(title="verification (random input, batch 2)")
        for column in ("compared", "max abs diff", "max rel diff"):
            table.add_column(column)
        table.add_row(
            "chain of all slices vs model", f"{report.max_abs:.3g}", f"{report.max_rel:.3g}"
        )
        for check in report.stages:
            table.add_row(
                f"stage [{check.start}, {check.stop}) vs chain",
                f"{check.max_abs:.3g}",
                f"{check.max_rel:.3g}",
            )
        console.print(table)
        console.print(f"[green]✓[/] within tolerance {report.tolerance:g} (relative)")
    console.print(
        "next: measure the slices on your devices with `splitter benchmark`, "
        "or plan with `splitter configure`"
    )
