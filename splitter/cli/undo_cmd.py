"""`splitter undo`: remove every trace of a deployment, devices and controller."""

from __future__ import annotations

from pathlib import Path

import typer

from splitter.cli.app import app, console, fail, host_progress
from splitter.cli.deploy_cmd import progress_bar
from splitter.errors import SplitterError


@app.command("undo")
def undo_command(
    name: str | None = typer.Option(None, "-n", "--name", help="Deployment (default: latest)."),
    inventory: Path | None = typer.Option(
        None, "-i", "--inventory", help="Override the inventory recorded at deploy."
    ),
) -> None:
    """Stop and remove a deployment's stages, files, keys and what deploy installed."""
    from splitter.deploy import undo

    try:
        with progress_bar() as bar:
            report = undo(name, inventory, on_event=host_progress(bar))
    except SplitterError as error:
        fail(error)
        return
    for device in report.cleaned:
        console.print(f"[green]✓[/] {device}: clean")
    if report.unreachable:
        for device, why in report.unreachable.items():
            console.print(f"[red]✗[/] {device}: {why}")
        fail(
            SplitterError(
                f"{len(report.unreachable)} device(s) still hold parts of '{report.name}'",
                f"bring them back and run `splitter undo --name {report.name}` again "
                "(the record keeps them)",
            )
        )
        return
    if not report.cleaned and report.record_removed and inventory is None:
        console.print(f"nothing to undo: no deployment named '{report.name}' on this controller "
                      "(pass -i INVENTORY to clean devices anyway)")  # fmt: skip
        return
    console.print(f"[green]✓[/] '{report.name}' removed ({report.seconds:.1f} s)")
