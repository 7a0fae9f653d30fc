"""`splitter deploy`: run a plan's stages on its devices, wired and secured, through Ansible."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from splitter.cli.app import app, console, fail, host_progress, import_tensorflow_quietly
from splitter.errors import SplitterError


def progress_bar() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), TextColumn("{task.fields[what]}"),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip


@app.command("deploy")
def deploy_command(
    plan: Path = typer.Argument(..., help="plan.yaml from `splitter configure`."),
    inventory: Path = typer.Option(..., "-i", "--inventory", help="Ansible inventory."),
    name: str | None = typer.Option(
        None, "-n", "--name", help="Deployment name (default: the model's name)."
    ),
    prepare_only: bool = typer.Option(
        False, "--prepare-only", help="Only build stage models, keys and the record (playbook use)."
    ),
) -> None:
    """Deploy a plan: install what devices lack, ship stages, start and wire them."""
    from splitter.deployment import prepare

    try:
        import_tensorflow_quietly()
        if prepare_only:
            before = _snapshot(name)
            record = prepare(plan, inventory, name)
            after = _snapshot(record["name"])
            print(json.dumps({"name": record["name"], "changed": before != after}))
            return
        report = _deploy_with_progress(plan, inventory, name)
    except SplitterError as error:
        fail(error)
        return
    _print_report(report)
    if report.failed:
        fail(
            SplitterError(
                "deploy did not finish: "
                + "; ".join(f"{host}: {why}" for host, why in report.failed.items()),
                f"fix the cause and run deploy again, or `splitter undo --name "
                f"{report.record['name']}` to remove what was started",
            )
        )


def _snapshot(name: str | None) -> str:
    """The stage files and keys of a deployment, to tell whether prepare changed anything."""
    from splitter.deployment import deployment_dir

    if not name:
        return ""
    directory = deployment_dir(name)
    return json.dumps(
        sorted(
            (str(p.relative_to(directory)), p.stat().st_size)
            for p in directory.rglob("*")
            if p.is_file() and p.parts[len(directory.parts)] in ("keys", "models")
        )
    )


def _deploy_with_progress(plan: Path, inventory: Path, name: str | None):
    from splitter.deploy import deploy

    with progress_bar() as bar:
        prep = bar.add_task("controller", what="re-cutting and converting stage models")

        def on_prepare(done: int, total: int) -> None:
            bar.update(prep, what=f"stage models {done + 1}/{total}")

        return deploy(plan, inventory, name, on_event=host_progress(bar), on_prepare=on_prepare)


def _print_report(report) -> None:
    record = report.record
    table = Table(title=f"deployment '{record['name']}' — {record['status']}")
    for column in ("stage", "device", "layers", "backend", "changed tasks"):
        table.add_column(column)
    for stage in record["stages"]:
        table.add_row(
            stage["name"], stage["device"], f"[{stage['start']}, {stage['stop']})",
            stage["backend"], str(report.changed.get(stage["device"], "-")),
        )  # fmt: skip
    table.add_row("gateway", "controller", "", "", str(report.changed.get("localhost", "-")))
    console.print(table)
    total = sum(report.changed.values())
    console.print(f"{total} changed tasks in {report.seconds:.1f} s")
    if not report.failed:
        console.print(
            f"[green]✓[/] deployed; next: `splitter predict --name {record['name']} --random`, "
            f"`splitter status --name {record['name']}`, `splitter undo --name {record['name']}`"
        )
