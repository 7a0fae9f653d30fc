"""`make demo`: the whole flow on the embedded default, one step after another.

Builds a real example model (MobileNetV2, weights=None), slices and verifies it, measures
it through Ansible on 3 devices (a lab of network namespaces when run as root with sshd,
local devices otherwise), plans the placement, deploys the planned stages
to the lab's devices through Ansible (CURVE-secured ZeroMQ between them), compares their
answers with the whole model's, shows status, undoes the deployment and removes the lab.
Each step prints what it did.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from rich.console import Console
from rich.table import Table

from splitter.errors import SplitterError

console = Console()
REQUESTS = 50


def step(title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def done(started: float, what: str) -> None:
    console.print(f"[green]✓[/] {what} [dim]({time.perf_counter() - started:.1f} s)[/]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("work-demo"))
    parser.add_argument("--model", default="mobilenetv2", help="example model to use")
    args = parser.parse_args(argv)
    try:
        return run(args.workdir, args.model)
    except SplitterError as error:
        console.print(f"[bold red]error:[/] {error.message}")
        return 2


def run(workdir: Path, kind: str) -> int:
    from splitter.cli.app import import_tensorflow_quietly

    began = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    summary: list[tuple[str, str]] = []

    started = step("1. model")
    import_tensorflow_quietly()
    from splitter.examples import write_example_model

    model_path = write_example_model(workdir / f"{kind}.keras", kind)
    done(started, f"built {kind} (keras.applications, weights=None) → {model_path}")

    started = step("2. slice --verify")
    from splitter.slicing import slice_model

    result = slice_model(model_path, workdir / "slices", verify=True, force=True)
    report = result.verification
    done(started, f"{result.slice_count} slices; chain vs model max |diff| {report.max_abs:.2g}")
    summary.append(("slices", f"{result.slice_count} (max |diff| {report.max_abs:.2g})"))

    started = step("3. devices + benchmark")
    profile_path = workdir / "profile.json"
    devices = _devices(workdir)
    summary.append(("devices", devices.description))
    try:
        _benchmark(workdir, devices.inventory, profile_path, summary)
    except BaseException:
        devices.remove()
        raise
    done(started, f"{devices.description}; profile → {profile_path}")

    started = step("4. configure")
    plan_path = workdir / "plan.yaml"
    plan = _configure(profile_path, plan_path)
    stages = ", ".join(f"{s['device']}[{s['start']}:{s['stop']})" for s in plan["stages"])
    done(started, f"plan → {plan_path}: {stages}")
    summary.append(("plan", f"{len(plan['stages'])} stages: {stages}"))
    summary.append(
        (
            "predicted latency (controller → stages → controller)",
            f"{plan['predicted']['latency_ms']:.2f} ms",
        )
    )

    os.environ["SPLITTER_HOME"] = str((workdir / "home").resolve())  # the demo's own records
    started = step("5. deploy (Ansible: runtime, stage models, keys, services, gateway)")
    from splitter.deploy import deploy

    try:
        report = deploy(plan_path, devices.inventory, "demo")
        if report.failed:
            raise SplitterError(
                "deploy failed: " + "; ".join(f"{h}: {w}" for h, w in report.failed.items()),
                "see the messages above; the lab is removed",
            )
        done(
            started, f"deployed in {report.seconds:.0f} s ({sum(report.changed.values())} changes)"
        )
        summary.append(("deploy", f"{report.seconds:.0f} s"))

        started = step("6. predict and compare with the whole model; status")
        measured_ms, gateway_ms, max_diff = _predict_and_compare(model_path)
        _run_cli("status", "--name", "demo")
        done(started, f"{REQUESTS} requests; p50 {measured_ms:.2f} ms; max |diff| {max_diff:.2g}")
        summary.append(("measured latency p50 (gateway)", f"{gateway_ms:.2f} ms"))
        summary.append(("measured latency p50 (client)", f"{measured_ms:.2f} ms"))
        summary.append(("pipeline vs whole model", f"max |diff| {max_diff:.2g}"))
    finally:
        started = step("7. undo, then remove the devices")
        from splitter.deploy import undo
        from splitter.deployment import record_path

        try:
            if record_path("demo").exists():
                gone = undo("demo")
                summary.append(
                    ("undo", f"{len(gone.cleaned)} devices clean in {gone.seconds:.0f} s")
                )
        finally:
            devices.remove()
        done(started, "deployment removed from every device, devices removed")

    table = Table(title=f"splitter demo — {time.perf_counter() - began:.0f} s")
    table.add_column("what")
    table.add_column("result")
    for row in summary:
        table.add_row(*row)
    console.print(table)
    ok = max_diff <= 1e-3
    console.print("[green]demo passed[/]" if ok else "[red]outputs differ from the model[/]")
    return 0 if ok else 1


@dataclass
class Devices:
    inventory: Path
    description: str
    remove: Callable[[], None]


def _devices(workdir: Path) -> Devices:
    """A 3-device lab when this machine can build one (root, sshd), local devices otherwise."""
    if os.geteuid() == 0 and Path("/usr/sbin/sshd").exists() and shutil.which("ip"):
        from splitter.lab import LabSpec, lab_down, lab_up

        spec = LabSpec(name="demo", devices=3, memory=(512 << 20, 1 << 30, 1 << 30),
                       cpus=(0.5, 1.0, 1.0), subnet_index=5)  # fmt: skip
        lab = lab_up(spec)
        return Devices(lab.inventory, "lab: 3 namespaces over SSH, 512M/1G/1G, 0.5/1/1 CPU",
                       lambda: lab_down(spec.name))  # fmt: skip
    from splitter.local_devices import remove_local_devices, write_local_inventory

    console.print("[yellow]no root or no sshd: using local devices (this machine, 3 times)[/]")
    folder = workdir / "local-devices"
    inventory = write_local_inventory(folder)
    return Devices(inventory, "local devices: 3 × this machine (no root needed)",
                   lambda: remove_local_devices(folder))  # fmt: skip


def _benchmark(workdir: Path, inventory: Path, profile_path: Path, summary: list) -> None:
    from splitter.benchmark import run_benchmark

    report = run_benchmark(workdir / "slices", inventory, [1], profile_path)
    for device in report.profile["devices"]:
        total = sum(t for t in device["compute"]["1"]["median_ms"] if t is not None)
        summary.append(
            (f"device {device['name']}", f"{device['cpus']:g} CPU, "
             f"{device['usable_memory_bytes'] / 2**20:.0f} MiB usable, model {total:.2f} ms")
        )  # fmt: skip


def _configure(profile_path: Path, plan_path: Path) -> dict:
    import subprocess

    import yaml

    cli = Path(sys.executable).with_name("splitter")
    subprocess.run([str(cli), "configure", str(profile_path), "-o", str(plan_path)], check=True)
    return yaml.safe_load(plan_path.read_text())


def _run_cli(*args: str) -> None:
    import subprocess

    subprocess.run([str(Path(sys.executable).with_name("splitter")), *args], check=True)


def _predict_and_compare(model_path: Path) -> tuple[float, float, float]:
    """Client p50, gateway p50 (what configure predicts) and the worst difference from the
    whole model. The model runs after the requests: TensorFlow's busy threads would
    otherwise share the CPUs with the pipeline while it is being timed."""
    import keras
    import numpy as np

    from splitter.deploy import client

    model = keras.saving.load_model(model_path)
    rng = np.random.default_rng(0)
    shape = (1, *model.inputs[0].shape[1:])
    inputs = [rng.standard_normal(shape).astype("float32") for _ in range(REQUESTS)]
    latencies, answers = [], []
    _, c = client("demo")
    with c:
        for x in inputs:
            tick = time.perf_counter()
            answers.append(next(iter(c.predict(x).values())))
            latencies.append((time.perf_counter() - tick) * 1000)
        gateway_p50 = float(c.status()["gateway"]["latency_p50_ms"])
    worst = max(
        float(np.max(np.abs(np.asarray(model(x)) - got)))
        for x, got in zip(inputs, answers, strict=True)
    )
    return float(np.median(latencies)), gateway_p50, worst


if __name__ == "__main__":
    sys.exit(main())
