"""`splitter benchmark`: time every slice on every device and the links, into profile.json."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from splitter.cli.app import app, console, fail, host_progress, import_tensorflow_quietly
from splitter.errors import SplitterError


def _batch_sizes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SplitterError(
            f"--batch-sizes '{text}' is not a list of integers", "e.g. 1,8"
        ) from None


@app.command("benchmark")
def benchmark_command(
    slices: Path = typer.Argument(..., help="Slice set folder (from `splitter slice`)."),
    inventory: Path | None = typer.Option(None, "-i", "--inventory", help="Ansible inventory."),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="Comma-separated, e.g. 1,8."),
    out: Path = typer.Option(Path("profile.json"), "-o", "--out", help="Profile to write."),
    from_results: Path | None = typer.Option(
        None, "--from-results", help="Build the profile from a benchmark playbook's results file."
    ),
    bundle_only: Path | None = typer.Option(
        None, "--bundle-only", help="Only write the slice bundle (for ansible-playbook) there."
    ),
) -> None:
    """Measure every slice on every device (and every link) and write a profile."""
    from splitter.benchmark import make_bundle, profile_from_results
    from splitter.manifest import read_manifest
    from splitter.profile import save_profile

    try:
        if from_results is not None:
            results = json.loads(Path(from_results).read_text())
            save_profile(profile_from_results(read_manifest(slices), results), out)
            console.print(f"[green]✓[/] wrote {out}; next: `splitter configure {out} -o plan.yaml`")
            return
        import_tensorflow_quietly()
        if bundle_only is not None:
            with _conversion_progress() as on_convert:
                make_bundle(read_manifest(slices), bundle_only, progress=on_convert)
            console.print(f"[green]✓[/] wrote {bundle_only}")
            return
        if inventory is None:
            raise SplitterError(
                "no inventory given", "pass -i INVENTORY (`splitter lab up` prints one)"
            )
        report = _run_with_progress(slices, inventory, _batch_sizes(batch_sizes), out)
    except SplitterError as error:
        fail(error)
        return
    _print_report(report)


class _conversion_progress:
    """A progress bar for converting slices to LiteRT, as a context manager giving a callback."""

    def __enter__(self):
        self.bar = Progress(
            TextColumn("converting slices to LiteRT"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=True,
        )  # fmt: skip
        self.bar.__enter__()
        self.task = self.bar.add_task("convert", total=None)
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


def _run_with_progress(slices, inventory, batch_sizes, out):
    from splitter.benchmark import run_benchmark

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[what]}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as bar:
        convert = bar.add_task("converting slices", total=None, what="")

        def on_convert(done: int, total: int) -> None:
            bar.update(convert, completed=done, total=total)

        on_event = host_progress(bar)
        # Ctrl-C is turned into ansible-runner's cancel inside run_playbook.
        return run_benchmark(
            slices, inventory, batch_sizes, out, on_event=on_event, on_convert=on_convert
        )


def _print_report(report) -> None:
    profile = report.profile
    table = Table(title=f"measured {profile['slices']['count']} slices")
    table.add_column("device")
    table.add_column("usable memory")
    table.add_column("CPUs")
    for size in profile["batch_sizes"]:
        table.add_column(f"Σ slices ms @ b={size}")
    table.add_column("measuring s")
    for device in profile["devices"]:
        sums = []
        for size in profile["batch_sizes"]:
            times = device["compute"][str(size)]["median_ms"]
            missing = sum(t is None for t in times)
            text = f"{sum(t for t in times if t is not None):.1f}"
            sums.append(text + (f" ({missing} not fitting)" if missing else ""))
        table.add_row(
            device["name"], f"{device['usable_memory_bytes'] / 2**20:.0f} MiB",
            f"{device['cpus']:g}", *sums, f"{report.seconds.get(device['name'], 0):.1f}",
        )  # fmt: skip
    console.print(table)
    for name, reason in report.unavailable.items():
        console.print(f"[red]✗ {name} unavailable[/]: {reason}")
    console.print(
        f"[green]✓[/] wrote {report.profile_path}; next: "
        f"`splitter configure {report.profile_path} -o plan.yaml`"
    )
