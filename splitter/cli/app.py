"""The Typer application and the one place that turns a SplitterError into exit code 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from splitter import __version__
from splitter.errors import SplitterError

# TensorFlow's C++ logging drowns the CLI's own output; users can raise it again.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    name="splitter",
    help="Run a trained Keras model split layer by layer across several machines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"splitter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Run a trained Keras model split layer by layer across several machines."""


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up banner sent to /dev/null.

    The banner (oneDNN, absl) ignores TF_CPP_MIN_LOG_LEVEL in TF 2.21 and would bury the
    CLI's own output; Python exceptions from the import still surface normally.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras
            import tensorflow  # noqa: F401

            keras.ops.convert_to_tensor([0.0])  # first op loads the remaining kernels
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def fail(error: SplitterError) -> None:
    """Print one line naming cause and fix, then exit with the error's code."""
    err_console.print(f"[bold red]error:[/] {error.message}", highlight=False, soft_wrap=True)
    raise typer.Exit(error.exit_code)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SplitterError as error:  # raised outside a command body (e.g. in a callback)
        err_console.print(f"error: {error.message}")
        sys.exit(error.exit_code)


def host_progress(bar: Any) -> Callable[[dict], None]:
    """An ansible-runner event handler that shows each host's current task on ``bar``."""
    rows: dict[str, int] = {}

    def on_event(event: dict) -> None:
        data = event.get("event_data", {})
        host, task = data.get("host"), data.get("task", "")
        if not host or not event.get("event", "").startswith("runner_on_"):
            return
        if host not in rows:
            rows[host] = bar.add_task(host, total=None, what="")
        state = event["event"].removeprefix("runner_on_")
        bar.update(rows[host], what=f"{task} ({state})")

    return on_event
