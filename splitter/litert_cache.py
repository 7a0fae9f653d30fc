"""Convert every slice of a set to LiteRT once, in parallel, cached by the slice's sha256.

Benchmarking measures each slice with the backend devices run (LiteRT), and converting a
slice costs a fraction of a second plus TensorFlow's import per process: the cache makes
a second benchmark of the same set free, and worker processes convert in parallel.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from splitter.manifest import Manifest

CHUNK = 8


@dataclass(frozen=True)
class SliceConversion:
    """Where slice ``index``'s .tflite is, or why it could not be converted."""

    index: int
    sha256: str
    path: Path | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.path is not None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitter" / "litert"


def _cached(cache: Path, index: int, sha256: str) -> SliceConversion | None:
    tflite = cache / f"{sha256}.tflite"
    if tflite.exists():
        return SliceConversion(index, sha256, tflite, None)
    failed = cache / f"{sha256}.failed.json"
    if failed.exists():
        return SliceConversion(index, sha256, None, json.loads(failed.read_text())["reason"])
    return None


def _convert_chunk(directory: str, indices: list[int], cache: str, unsafe: bool) -> list[tuple]:
    """Worker: convert some slices (TensorFlow is imported once per worker process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from splitter.manifest import read_manifest
    from splitter.stages import convert_to_tflite, load_slice

    manifest = read_manifest(directory, check_files=False)
    done = []
    for index in indices:
        sha256 = manifest.slices[index]["sha256"]
        target = Path(cache) / f"{sha256}.tflite"
        partial = target.with_suffix(f".tmp-{os.getpid()}")
        result = convert_to_tflite(load_slice(manifest, index, unsafe=unsafe), partial)
        if result.ok:
            os.replace(partial, target)
            done.append((index, str(target), None))
        else:
            (Path(cache) / f"{sha256}.failed.json").write_text(
                json.dumps({"reason": result.reason})
            )
            done.append((index, None, result.reason))
    return done


def convert_slices(
    manifest: Manifest,
    *,
    cache_dir: Path | None = None,
    workers: int | None = None,
    unsafe: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[SliceConversion]:
    """A LiteRT file (or the reason there is none) for every slice, converting what is missing."""
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    results: dict[int, SliceConversion] = {}
    missing = []
    for entry in manifest.slices:
        hit = _cached(cache, entry["index"], entry["sha256"])
        if hit is None:
            missing.append(entry["index"])
        else:
            results[hit.index] = hit
    total = len(manifest.slices)
    if progress:
        progress(len(results), total)
    if missing:
        workers = workers or min(len(missing) // CHUNK + 1, os.cpu_count() or 1)
        chunks = [missing[i : i + CHUNK] for i in range(0, len(missing), CHUNK)]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_convert_chunk, str(manifest.directory), chunk, str(cache), unsafe)
                for chunk in chunks
            ]
            for future in as_completed(futures):
                for index, path, reason in future.result():
                    sha256 = manifest.slices[index]["sha256"]
                    results[index] = SliceConversion(
                        index, sha256, Path(path) if path else None, reason
                    )
                if progress:
                    progress(len(results), total)
    return [results[i] for i in range(total)]
