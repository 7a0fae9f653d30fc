"""`splitter run-local`: start every stage of a plan as a local process and serve."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import typer

from splitter.cli.app import app, console, err_console, fail, import_tensorflow_quietly
from splitter.errors import SplitterError


@app.command("run-local")
def run_local_command(
    plan: Path = typer.Argument(..., help="The plan.yaml written by `splitter configure`."),
    workdir: Path = typer.Option(
        Path("run-local"), "--workdir", help="Folder for stage models, configs, keys and logs."
    ),
    port: int = typer.Option(0, "--port", help="Gateway port for clients (0: pick a free one)."),
    threads: int = typer.Option(1, "--threads", help="Inference threads per stage."),
    requests: int = typer.Option(
        0, "--requests", help="Send this many random requests, report, and stop (0: serve)."
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Turn CURVE off (debugging on one host only)."
    ),
) -> None:
    """Start all stages of PLAN as local processes (each on its own port) and serve predictions."""
    import_tensorflow_quietly()
    from splitter.run_local import run_local

    try:
        pipeline = run_local(
            plan, workdir, port=port or None, curve=not insecure, num_threads=threads
        )
    except SplitterError as error:
        fail(error)
        return
    try:
        names = ", ".join(s.name for s in pipeline.stages)
        console.print(f"[green]✓[/] {len(pipeline.stages)} stages up ({names})")
        console.print(f"gateway: {pipeline.client_address}   logs: {pipeline.workdir / 'logs'}")
        if requests:
            _smoke(pipeline, requests)
        else:
            _serve(pipeline)
    finally:
        codes = pipeline.stop()
        bad = {k: v for k, v in codes.items() if v != 0}
        if bad:
            err_console.print(f"[yellow]stopped, but some processes exited uncleanly:[/] {bad}")
        else:
            console.print("[green]✓[/] drained and stopped every process")


def _smoke(pipeline, count: int) -> None:
    import numpy as np

    with pipeline.client(timeout_s=30.0) as client:
        specs = client.info()["inputs"]
        rng = np.random.default_rng(0)
        batch = {
            s["name"]: rng.random([1 if d is None else d for d in s["shape"]]).astype(s["dtype"])
            for s in specs
        }
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            out = client.predict(batch)
            times.append((time.perf_counter() - t0) * 1000)
        shapes = {k: list(v.shape) for k, v in out.items()}
        console.print(
            f"[green]✓[/] {count} predictions, p50 {np.percentile(times, 50):.2f} ms; "
            f"outputs {shapes}"
        )


def _serve(pipeline) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    keys = pipeline.keys_dir
    console.print(
        "serving; Ctrl-C to drain and stop. From Python:\n"
        "  from splitter_runtime.client import Client\n"
        f"  c = Client('{pipeline.client_address}', secret_key='{keys / 'client.key_secret'}', "
        f"server_key='{keys / 'gateway.key'}')\n"
        "  c.predict(x)"
    )
    reported: set[str] = set()
    while not stop.wait(0.5):
        for name, proc in pipeline.procs.items():
            if proc.poll() is not None and name not in reported:
                reported.add(name)
                err_console.print(
                    f"[red]{name} exited with code {proc.returncode}[/]; the others keep "
                    f"running. Log: {pipeline.workdir / 'logs' / (name + '.log')}"
                )
