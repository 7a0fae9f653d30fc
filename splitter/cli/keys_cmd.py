"""`splitter keys`: generate CURVE keypairs for a deployment (one per process)."""

from __future__ import annotations

from pathlib import Path

import typer

from splitter.cli.app import app, console, fail
from splitter.errors import SplitterError


@app.command("keys")
def keys_command(
    directory: Path = typer.Argument(..., help="Folder to write <name>.key / .key_secret to."),
    names: list[str] = typer.Argument(
        ..., help="One name per process, e.g. gateway client s0 s1 s2."
    ),
    force: bool = typer.Option(False, "--force", help="Replace existing key files."),
) -> None:
    """Generate one CURVE keypair per NAME: public halves to share, secret halves to keep."""
    try:
        from splitter_runtime import keys
        from splitter_runtime.errors import RuntimeFailure
    except ImportError:
        fail(SplitterError("the splitter runtime is not installed", "pip install -e ./runtime"))
        return
    try:
        written = keys.generate(directory, names, overwrite=force)
    except RuntimeFailure as error:
        fail(SplitterError(error.cause, error.fix))
        return
    for path in written:
        console.print(f"[green]✓[/] {path} (+ {path.name}_secret, mode 600)")
    console.print(
        "next: list each peer's public .key in the allow_* fields of the stage.yaml that "
        "must accept it; keep every .key_secret on its own device"
    )
