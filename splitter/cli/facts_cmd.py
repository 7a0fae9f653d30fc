"""`splitter facts`: what each device can give a stage (memory incl. cgroups, CPUs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from splitter.cli.app import app, console, fail
from splitter.errors import SplitterError


def _gib(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**30:.2f} GiB"


@app.command("facts")
def facts_command(
    inventory: Path = typer.Option(..., "-i", "--inventory", help="Ansible inventory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    limit: str | None = typer.Option(None, "--limit", help="Only these hosts (Ansible pattern)."),
) -> None:
    """Gather each device's memory (cgroup limits included), CPUs and accelerators."""
    from splitter.facts import gather_facts

    try:
        with console.status("gathering facts") as spinner:

            def on_event(event: dict) -> None:
                data = event.get("event_data", {})
                if event.get("event") in ("runner_on_ok", "runner_on_failed"):
                    spinner.update(f"gathering facts: {data.get('host')} done")

            report = gather_facts(inventory, on_event=on_event, limit=limit)
    except SplitterError as error:
        fail(error)
        return
    if as_json:
        print(json.dumps({"devices": report.summary(), "unavailable": report.unavailable}))
    else:
        table = Table(title="devices")
        for column in ("device", "usable memory", "cgroup limit", "available RAM", "CPUs",
                       "arch", "accelerators", "python", "systemd"):  # fmt: skip
            table.add_column(column)
        for name, facts in report.devices.items():
            memory, cpu = facts["memory"], facts["cpu"]
            quota = f" (quota {cpu['quota']:g})" if cpu["quota"] else ""
            table.add_row(
                name,
                _gib(memory["usable_bytes"]),
                _gib(memory["cgroup_limit"]),
                _gib(memory["available"]),
                f"{cpu['effective']:g}{quota}",
                facts["architecture"],
                ", ".join(a["name"] for a in facts["accelerators"]) or "none",
                facts["python"]["version"],
                "yes" if facts["systemd"] else "no",
            )
        console.print(table)
    for name, reason in report.unavailable.items():
        console.print(f"[red]✗ {name}[/]: {reason}")
    if report.unavailable and not report.devices:
        raise typer.Exit(2)
