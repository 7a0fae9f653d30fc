"""`splitter status`: each stage of a deployment, as the gateway sees it."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from splitter.cli.app import app, console, fail
from splitter.errors import SplitterError


def _mib(value) -> str:
    return f"{value / 2**20:.0f} MiB" if isinstance(value, (int, float)) else "-"


def _ms(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


@app.command("status")
def status_command(
    name: str | None = typer.Option(None, "-n", "--name", help="Deployment (default: latest)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Health, requests, latency and memory of each stage of a deployment."""
    from splitter_runtime.errors import RuntimeFailure

    from splitter.deploy import client

    try:
        record, c = client(name, timeout_s=5.0)
        with c:
            status = c.status(timeout_s=5.0)
    except RuntimeFailure as error:
        fix = "run `splitter deploy` again, or `splitter undo`"
        fail(SplitterError(f"the gateway does not answer: {error.cause}", fix))
        return
    except SplitterError as error:
        fail(error)
        return
    devices = {s["name"]: s["device"] for s in record["stages"]}
    if as_json:
        print(json.dumps({"name": record["name"], "devices": devices, **status}, indent=2))
        return
    ready = "ready" if status["ready"] else "NOT ready"
    table = Table(title=f"deployment '{record['name']}' — {ready}")
    for column in ("stage", "device", "health", "served", "failed", "p50 ms", "p99 ms",
                   "queue", "memory"):  # fmt: skip
        table.add_column(column)
    for stage in status["stages"]:
        s = stage.get("status") or {}
        color = "green" if stage["state"] == "up" else "red"
        table.add_row(
            stage["name"], devices.get(stage["name"], "?"), f"[{color}]{stage['state']}[/]",
            str(s.get("served", "-")), str(s.get("failed", "-")), _ms(s.get("latency_p50_ms")),
            _ms(s.get("latency_p99_ms")), str(s.get("queue_depth", "-")), _mib(s.get("rss_bytes")),
        )  # fmt: skip
    g = status["gateway"]
    table.add_row("gateway", "controller", "[green]up[/]", str(g["served"]), str(g["failed"]),
                  _ms(g.get("latency_p50_ms")), _ms(g.get("latency_p99_ms")),
                  str(g.get("in_flight", "-")), "-")  # fmt: skip
    console.print(table)
