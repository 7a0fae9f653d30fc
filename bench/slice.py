"""Slicing cost against the cheapest thing one can do with a model: load it and save it.

Both run in fresh processes on the same ResNet50 file (224×224, weights=None, 25.6 M
parameters), so peak RSS is comparable; times exclude the shared TensorFlow import.
Usage: python bench/slice.py [--model resnet50|mobilenetv2|densenet121] [--input 224]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD_PRELUDE = """
import os, resource, sys, time, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, tensorflow
"""

LOAD_SAVE = """
started = time.perf_counter()
model = keras.saving.load_model(sys.argv[1], compile=False)
model.save(sys.argv[2])
elapsed = time.perf_counter() - started
"""

SLICE = """
from splitter.slicing import slice_model
started = time.perf_counter()
result = slice_model(sys.argv[1], sys.argv[2], force=True)
elapsed = time.perf_counter() - started
"""

REPORT = """
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": elapsed, "peak_rss": peak}))
"""


def run_child(body: str, *args: str) -> dict:
    code = textwrap.dedent(CHILD_PRELUDE + body + REPORT)
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--input", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="bench-slice-") as tmp:
        work = Path(tmp)
        model_path = work / "model.keras"
        build = (
            "import keras; keras.utils.set_random_seed(0); "
            f"m = getattr(keras.applications, {_ctor(args.model)!r})(weights=None, "
            f"input_shape=({args.input}, {args.input}, 3)); m.save({str(model_path)!r})"
        )
        subprocess.run([sys.executable, "-c", build], check=True, capture_output=True)
        size = model_path.stat().st_size
        base = [run_child(LOAD_SAVE, str(model_path), str(work / "copy.keras"))]
        sliced = [run_child(SLICE, str(model_path), str(work / "slices"))]
        for _ in range(args.repeats - 1):
            base.append(run_child(LOAD_SAVE, str(model_path), str(work / "copy.keras")))
            sliced.append(run_child(SLICE, str(model_path), str(work / "slices")))
        count = len(json.loads((work / "slices" / "manifest.json").read_text())["slices"])
    best_base = min(base, key=lambda r: r["seconds"])
    best_slice = min(sliced, key=lambda r: r["seconds"])
    time_ratio = best_slice["seconds"] / best_base["seconds"]
    rss_ratio = best_slice["peak_rss"] / best_base["peak_rss"]
    mib = 1024 * 1024
    print(
        f"model: {args.model} {args.input}x{args.input}, file {size / mib:.1f} MiB, {count} slices"
    )
    print(f"{'':24}{'wall s':>10}{'peak RSS MiB':>15}")
    print(
        f"{'load + save whole':24}{best_base['seconds']:>10.2f}{best_base['peak_rss'] / mib:>15.0f}"
    )
    print(
        f"{'slice per node':24}{best_slice['seconds']:>10.2f}{best_slice['peak_rss'] / mib:>15.0f}"
    )
    print(f"{'ratio':24}{time_ratio:>10.2f}{rss_ratio:>15.2f}")
    print(f"bench: slice_time_vs_load_save = {time_ratio:.2f} x (target <= 5)")
    print(f"bench: slice_peak_rss_vs_load_save = {rss_ratio:.2f} x (target <= 2)")


def _ctor(name: str) -> str:
    return {"resnet50": "ResNet50", "mobilenetv2": "MobileNetV2", "densenet121": "DenseNet121"}[
        name
    ]


if __name__ == "__main__":
    main()
