"""The whole flow on a 3-device lab, deployed for real: the chosen plan against the best single
device and an even split, each deployed and measured in the same run.

Prints deploy times (fresh, and a redeploy that must change nothing), and per plan the
predicted and measured latency (p50 at the gateway, which is what configure predicts:
controller → stages → controller; and at the client, which adds the client's hop) and
throughput (many requests in flight). Needs root (it builds a lab).

    .venv/bin/python bench/e2e.py [--model mobilenetv2] [--requests 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def measure(name: str, requests: int) -> dict[str, float]:
    """Sequential latency (client and gateway p50) and pipelined throughput of a deployment."""
    from splitter.cli.predict_cmd import random_inputs
    from splitter.deploy import client

    record, c = client(name)
    x = random_inputs(record["inputs"], record.get("batch_size", 1))
    with c:
        for _ in range(10):
            c.predict(x)
        before = c.status()["gateway"]["served"]
        latencies = []
        for _ in range(requests):
            tick = time.perf_counter()
            c.predict(x)
            latencies.append((time.perf_counter() - tick) * 1000)
        gateway_p50 = c.status()["gateway"]["latency_p50_ms"]
        assert c.status()["gateway"]["served"] - before >= requests
        started = time.perf_counter()
        for _ in c.map([x] * requests, window=16):
            pass
        throughput = requests / (time.perf_counter() - started)
    return {
        "client_p50_ms": float(np.median(latencies)),
        "gateway_p50_ms": float(gateway_p50),
        "throughput_rps": throughput,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    from splitter.benchmark import run_benchmark
    from splitter.cli.app import import_tensorflow_quietly
    from splitter.deploy import deploy, undo
    from splitter.examples import write_example_model
    from splitter.lab import LabSpec, lab_down, lab_up
    from splitter.planning import PlanOptions, make_plan, plan_document, write_plan
    from splitter.profile import load_profile
    from splitter.slicing import slice_model

    import_tensorflow_quietly()
    spec = LabSpec(name="bene2e", devices=3, memory=(256 << 20, 512 << 20, 1 << 30),
                   cpus=(0.5, 1.0, 1.0), subnet_index=11)  # fmt: skip
    rows, lines = [], []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        os.environ["SPLITTER_HOME"] = str(work / "home")
        lab = lab_up(spec)
        try:
            model = write_example_model(work / f"{args.model}.keras", args.model)
            slice_model(model, work / "slices")
            run_benchmark(work / "slices", lab.inventory, [1], work / "profile.json")
            result = make_plan(load_profile(work / "profile.json"), PlanOptions())
            candidates = {"chosen": result.stages}
            for label, key in (("single", "best single device"),
                               ("even", "even split, all devices")):  # fmt: skip
                if result.baselines.get(key):
                    candidates[label] = result.baselines[key]
            measured: dict[str, tuple] = {}
            for label, stages in candidates.items():
                same = next((m for m, st in candidates.items()
                             if m in measured and st == stages), None)  # fmt: skip
                if same is not None:  # the very same plan: its figures, not a second sample
                    rows.append((label, f"(same plan as {same})", *measured[same]))
                    continue
                path = work / f"{label}.yaml"
                document = plan_document(dataclasses.replace(result, stages=stages))
                write_plan(document, path)
                started = time.perf_counter()
                report = deploy(path, lab.inventory, label)
                fresh = time.perf_counter() - started
                assert not report.failed, report.failed
                if label == "chosen":
                    started = time.perf_counter()
                    again = deploy(path, lab.inventory, label)
                    redeploy = time.perf_counter() - started
                    changed = sum(again.changed.values())
                    lines.append(f"bench: fresh_deploy = {fresh:.1f} s (target <= 120)")
                    lines.append(f"bench: no_change_redeploy = {redeploy:.1f} s (target <= 60)")
                    lines.append(f"bench: redeploy_changed_tasks = {changed} tasks (target == 0)")
                got = measure(label, args.requests)
                undo(label)
                predicted = document["predicted"]
                where = ", ".join(f"{s['device']}[{s['start']}:{s['stop']})"
                                  for s in document["stages"])  # fmt: skip
                measured[label] = (predicted["latency_ms"], got["gateway_p50_ms"],
                                   got["client_p50_ms"], predicted["throughput_rps"],
                                   got["throughput_rps"], fresh)  # fmt: skip
                rows.append((label, where, *measured[label]))
        finally:
            lab_down(spec.name)
    print(f"\n{'plan':8} {'stages':42} {'pred ms':>8} {'gw p50':>8} {'cli p50':>8} "
          f"{'meas/pred':>9} {'pred rps':>9} {'meas rps':>9} {'deploy s':>8}")  # fmt: skip
    for label, where, pred, gw, cli, prps, mrps, fresh in rows:
        print(f"{label:8} {where[:42]:42} {pred:8.2f} {gw:8.2f} {cli:8.2f} {gw / pred:9.2f} "
              f"{prps:9.1f} {mrps:9.1f} {fresh:8.1f}")  # fmt: skip
    chosen = next(r for r in rows if r[0] == "chosen")
    for label, *_rest in rows:
        if label != "chosen":
            other = next(r for r in rows if r[0] == label)
            lines.append(f"bench: chosen_vs_{label}_latency = {chosen[3] / other[3]:.2f} x "
                         "(target <= 1.0)")  # fmt: skip
    for label, _where, pred, gw, *_rest in rows:
        lines.append(f"bench: prediction_error_{label} = {abs(gw / pred - 1):.2f} "
                     "(target <= 0.25)")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
