"""`splitter predict`: send one input through a deployed pipeline and time it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from splitter.cli.app import app, console, fail
from splitter.errors import SplitterError


def random_inputs(specs: list[dict], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors shaped like the pipeline's inputs (None → ``batch``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in specs:
        shape = [batch if d is None else d for d in spec["shape"]]
        out[spec["name"]] = rng.random(shape).astype(spec["dtype"])
    return out


def _read_input(path: Path, specs: list[dict]) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise SplitterError(
            f"cannot read '{path}' as .npy/.npz ({error})",
            "save the input with numpy.save (one input) or numpy.savez (one array per input name)",
        ) from None
    if isinstance(loaded, np.ndarray):
        if len(specs) != 1:
            raise SplitterError(
                f"the pipeline takes {len(specs)} inputs and '{path}' holds one array",
                f"save an .npz with arrays named {[s['name'] for s in specs]}",
            )
        return {specs[0]["name"]: loaded}
    return {key: loaded[key] for key in loaded.files}


@app.command("predict")
def predict_command(
    input_path: Path | None = typer.Option(None, "--input", help="Input .npy (or .npz by name)."),
    random: bool = typer.Option(False, "--random", help="Use a random input of the right shape."),
    name: str | None = typer.Option(None, "-n", "--name", help="Deployment (default: latest)."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Write outputs (.npy or .npz)."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the answer."),
) -> None:
    """Run one input through a deployed pipeline; print its latency."""
    from splitter_runtime.errors import RuntimeFailure

    from splitter.deploy import client

    try:
        if (input_path is None) == (not random):
            raise SplitterError("give exactly one of --input FILE or --random", "see --help")
        record, c = client(name, timeout_s=timeout)
        with c:
            specs = record["inputs"]
            inputs = (
                random_inputs(specs, record.get("batch_size", 1))
                if random
                else _read_input(input_path, specs)
            )
            started = time.perf_counter()
            outputs = c.predict(inputs)
            ms = (time.perf_counter() - started) * 1000
    except RuntimeFailure as error:
        fail(SplitterError(error.cause, error.fix or "check `splitter status`"))
        return
    except SplitterError as error:
        fail(error)
        return
    for key, value in outputs.items():
        console.print(f"{key}: shape {list(value.shape)} {value.dtype}")
    console.print(f"[green]✓[/] '{record['name']}' answered in {ms:.2f} ms")
    if out is not None:
        if len(outputs) == 1 and out.suffix != ".npz":
            np.save(out, next(iter(outputs.values())))
        else:
            np.savez(out, **outputs)
        console.print(f"wrote {out}")
