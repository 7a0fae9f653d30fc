"""Run a plan's stages as local processes: the embedded default before Ansible deploy.

Builds each stage's model from the slice set (one re-cut model per stage, converted for its
backend), then hands files to :class:`splitter_runtime.local.LocalPipeline`, which generates
this run's CURVE keys, writes stage.yaml/gateway.yaml and starts one process per stage plus a
gateway, each on its own 127.0.0.1 port.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from splitter.errors import SplitterError


@dataclass(frozen=True)
class PlannedStage:
    """What run-local needs from one plan.yaml stage."""

    index: int
    name: str
    start: int
    stop: int
    backend: str


def read_plan(plan_path: Path | str) -> tuple[Path, int, list[PlannedStage]]:
    """(slice set directory, batch size, stages) from a plan.yaml (docs/formats.md)."""
    path = Path(plan_path)
    if not path.is_file():
        raise SplitterError(f"plan file '{path}' does not exist", "run `splitter configure` first")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SplitterError(
            f"'{path}' is not valid YAML: {error}", "fix or regenerate it"
        ) from None

    def bad(field: str, expected: str) -> SplitterError:
        return SplitterError(
            f"'{path}': field '{field}' must be {expected}",
            "regenerate the plan with `splitter configure` (format: docs/formats.md, plan.yaml)",
        )

    if not isinstance(data, dict) or data.get("kind") != "splitter.plan":
        raise bad("kind", "'splitter.plan'")
    if data.get("schema_version") != 1:
        raise bad("schema_version", "1")
    slices = data.get("slices")
    if not isinstance(slices, dict) or not isinstance(slices.get("path"), str):
        raise bad("slices.path", "the path of the slice set's manifest.json")
    slice_path = Path(slices["path"])
    if not slice_path.is_absolute() and (path.parent / slice_path).exists():
        slice_path = path.parent / slice_path  # relative to the plan first, else to the cwd
    slice_dir = slice_path.parent if slice_path.name.endswith(".json") else slice_path
    raw = data.get("stages")
    if not isinstance(raw, list) or not raw:
        raise bad("stages", "a non-empty list")
    stages = []
    for i, st in enumerate(raw):
        if not isinstance(st, dict):
            raise bad(f"stages[{i}]", "a mapping")
        for key in ("start", "stop"):
            if type(st.get(key)) is not int:
                raise bad(f"stages[{i}].{key}", "an integer")
        backend = st.get("backend", "litert")
        if backend not in ("litert", "tensorflow"):
            raise bad(f"stages[{i}].backend", "litert or tensorflow")
        device = str(st.get("device", f"stage{i}"))
        name = f"s{i}-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in device)
        stages.append(PlannedStage(i, name, st["start"], st["stop"], backend))
    for a, b in itertools.pairwise(stages):
        if a.stop != b.start:
            raise bad(
                "stages",
                f"contiguous ranges (stage {a.index} stops at {a.stop}, "
                f"stage {b.index} starts at {b.start})",
            )
    batch = data.get("batch_size", 1)
    return slice_dir, batch if type(batch) is int and batch > 0 else 1, stages


def build_stage_files(
    slice_dir: Path | str,
    ranges: list[tuple[int, int]],
    out_dir: Path | str,
    *,
    backends: list[str] | None = None,
    names: list[str] | None = None,
    num_threads: int = 1,
    batch_size: int = 1,
) -> list[Any]:
    """Re-cut each ``[start, stop)`` as one model, convert it, and describe it as a StageSpec.

    A stage whose LiteRT conversion fails falls back to TensorFlow (a ``.keras`` file), as the
    design says; ``backends[i] == "tensorflow"`` asks for that directly.
    """
    from splitter_runtime.local import StageSpec
    from splitter_runtime.wire import TensorSpec

    from splitter.manifest import read_manifest
    from splitter.stages import build_stage_model, convert_to_tflite

    manifest = read_manifest(slice_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = []
    for i, (start, stop) in enumerate(ranges):
        name = names[i] if names else f"s{i}"
        want = backends[i] if backends else "litert"
        model = build_stage_model(manifest, start, stop)
        path: Path | None = None
        if want == "litert":
            # convert_to_tflite checks the file against Keras and tries other methods first
            result = convert_to_tflite(model, out / f"{name}.tflite")
            path = result.path
            if path is None:
                want = "tensorflow"
        if path is None:
            path = out / f"{name}.keras"
            model.save(path)

        def tensor_specs(position: int) -> list[TensorSpec]:
            return [
                TensorSpec(t["name"], t["dtype"], tuple(t["shape"]))
                for t in manifest.cut_tensors(position)
            ]

        specs.append(
            StageSpec(
                name=name,
                model_file=path,
                inputs=tensor_specs(start),
                outputs=tensor_specs(stop),
                backend=want,
                num_threads=num_threads,
                batch_size=batch_size,
            )
        )
    return specs


def run_local(
    plan_path: Path | str,
    workdir: Path | str,
    *,
    port: int | None = None,
    curve: bool = True,
    num_threads: int = 1,
    start_timeout_s: float = 120.0,
) -> Any:
    """Build the plan's stages and start them (plus a gateway) as local processes.

    Returns the started :class:`splitter_runtime.local.LocalPipeline`; call ``.client()`` to
    predict and ``.stop()`` to drain and stop every process.
    """
    try:
        from splitter_runtime.errors import RuntimeFailure
        from splitter_runtime.local import LocalPipeline
    except ImportError:
        raise SplitterError(
            "the splitter runtime is not installed", "pip install -e ./runtime (or `make venv`)"
        ) from None
    slice_dir, batch, stages = read_plan(plan_path)
    workdir = Path(workdir)
    specs = build_stage_files(
        slice_dir,
        [(s.start, s.stop) for s in stages],
        workdir / "models",
        backends=[s.backend for s in stages],
        names=[s.name for s in stages],
        num_threads=num_threads,
        batch_size=batch,
    )
    pipeline = LocalPipeline(specs, workdir, curve=curve, client_port=port)
    try:
        pipeline.start(timeout_s=start_timeout_s)
    except RuntimeFailure as error:
        raise SplitterError(error.cause, error.fix) from None
    return pipeline
