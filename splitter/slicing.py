"""Cut a Keras model into one sub-model per graph node and write the slice set.

The set is written to a temporary sibling folder and renamed into place only when it is
complete, so a failure never leaves half a slice set behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitter import __version__
from splitter.checksums import sha256_of
from splitter.errors import SplitterError
from splitter.manifest import MANIFEST_NAME, SCHEMA_VERSION, is_slice_set, write_manifest
from splitter.model_io import load_model

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class SliceResult:
    """What `slice_model` wrote: where, how many slices, and the verification if asked."""

    directory: Path
    slice_count: int
    model_name: str
    verification: Any = None  # splitter.verify.VerifyReport when --verify was given


def _no_progress(done: int, total: int, what: str) -> None:
    return None


def slice_model(
    model_path: Path | str,
    out_dir: Path | str,
    *,
    unsafe: bool = False,
    force: bool = False,
    verify: bool = False,
    progress: Progress | None = None,
) -> SliceResult:
    """Slice ``model_path`` into ``out_dir`` (one ``.keras`` per node plus ``manifest.json``).

    With ``verify`` the chain of written slices (and re-cut stages) is compared with the
    original on random input before the set is published; a mismatch raises and writes
    nothing.
    """
    model_path, out_dir = Path(model_path), Path(out_dir)
    progress = progress or _no_progress
    _check_output_dir(out_dir, force)
    model = load_model(model_path, unsafe=unsafe)

    from splitter import keras_graph as kg

    kg.check_keras_version()
    flat = kg.flatten(model)
    if not flat.nodes:
        raise SplitterError(
            f"model '{model.name}' in '{model_path}' has no layers to cut (it only passes its "
            "inputs through)",
            "slice a model that computes something",
        )
    cuts = kg.cut_sets(flat)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        slices = []
        total = len(flat.nodes)
        for graph_node in flat.nodes:
            index = graph_node.position
            progress(index, total, graph_node.name)
            slices.append(_write_slice(flat, cuts, index, staging))
        progress(total, total, "manifest")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "kind": "splitter.slices",
            "source": {
                "name": model.name,
                "file": str(model_path.resolve()),
                "sha256": sha256_of(model_path),
                "unsafe": unsafe,
            },
            "versions": _versions(),
            "inputs": [_spec(flat, t) for t in cuts[0]],
            "outputs": [_spec(flat, t) for t in cuts[-1]],
            "cuts": [
                {
                    "position": k,
                    "tensors": [flat.name_of(t) for t in cut],
                    "bytes_per_sample": sum(kg.bytes_per_sample(t) for t in cut),
                }
                for k, cut in enumerate(cuts)
            ],
            "slices": slices,
        }
        write_manifest(staging, manifest)
        report = None
        if verify:
            from splitter.verify import verify_slice_set

            report = verify_slice_set(staging, model, unsafe=unsafe, progress=progress)
            if not report.ok:
                raise SplitterError(
                    f"verification failed: slices differ from the model by {report.max_abs:.3g} "
                    f"(relative {report.max_rel:.3g}, tolerance {report.tolerance:g})",
                    "report this as a bug with the model file; nothing was written",
                )
        _publish(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return SliceResult(out_dir, len(slices), model.name, report)


def _write_slice(flat: Any, cuts: list[list[Any]], index: int, directory: Path) -> dict:
    from splitter import keras_graph as kg

    graph_node = flat.nodes[index]
    sub = kg.build_submodel(flat, index, index + 1, cuts)
    file_name = f"slice_{index:04d}.keras"
    sub.save(directory / file_name)
    return {
        "index": index,
        "layers": [graph_node.name],
        "inputs": [_spec(flat, t) for t in cuts[index]],
        "outputs": [_spec(flat, t) for t in cuts[index + 1]],
        "param_bytes": kg.operation_weights_bytes([graph_node.operation]),
        "flops_per_sample": kg.estimate_flops(graph_node),
        "activation_bytes_per_sample": kg.peak_live_bytes(flat, index, index + 1, cuts),
        "file": file_name,
        "sha256": sha256_of(directory / file_name),
    }


def _spec(flat: Any, tensor: Any) -> dict[str, Any]:
    from splitter import keras_graph as kg

    return {
        "name": flat.name_of(tensor),
        "shape": [None if d is None else int(d) for d in tensor.shape],
        "dtype": str(tensor.dtype),
        "bytes_per_sample": kg.bytes_per_sample(tensor),
    }


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"splitter": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def _check_output_dir(out_dir: Path, force: bool) -> None:
    if not out_dir.exists() or force:
        return
    if out_dir.is_dir() and (is_slice_set(out_dir) or not any(out_dir.iterdir())):
        return
    what = "a file" if out_dir.is_file() else "a folder that is not a slice set"
    raise SplitterError(
        f"output '{out_dir}' exists and is {what}; refusing to overwrite it",
        "choose another -o, or pass --force to replace it",
    )


def _publish(staging: Path, out_dir: Path) -> None:
    """Swap the finished set into place; the old one is removed only after the swap."""
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                old.unlink()


__all__ = ["MANIFEST_NAME", "SliceResult", "slice_model"]
