"""Benchmark the runtime: raw pyzmq hop, monolithic model, 2- and 3-stage local pipelines.

    .venv/bin/python bench/pipeline.py                  # MobileNetV2 224×224 α=1.0 (~6 min)
    .venv/bin/python bench/pipeline.py --model example  # the 96×96 α=0.35 example (~2 min)

Stages are built the way run-local builds them (splitter.run_local.build_stage_files, whose
conversion checks each LiteRT file against Keras and tries another method if it differs);
the bench checks every converted stage against Keras again and warns when one does not match.

All in one run on this machine, same backend (LiteRT/XNNPACK) and thread count everywhere.
Prints tables with ratios side by side and ends with one ``bench:`` line per target:

- hop overhead: (pipeline p50 − Σ stage compute p50) / Σ raw pyzmq hop for the same bytes
  over the same hops (client→gateway→s0→…→gateway→client);
- pipelined throughput / what the slowest stage alone allows (stages pinned to cores);
- LiteRT vs Keras for the same stage (in-process, same threads).

Figures are relative: this machine may have 2 shared cores (see the printed core count).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# -- raw pyzmq hop (the floor) ---------------------------------------------------------------
def _echo(pull_addr: str, push_addr: str, keys_dir: str) -> None:
    """Echo process: PULL → PUSH every message back, zero-copy, until 'stop'."""
    import zmq
    from splitter_runtime import keys

    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    if keys_dir != "-":
        d = Path(keys_dir)
        pull.curve_publickey, pull.curve_secretkey = keys.load_pair(d / "echo.key_secret")
        pull.curve_server = True
        push.curve_publickey, push.curve_secretkey = keys.load_pair(d / "echo.key_secret")
        push.curve_serverkey = keys.load_public(d / "main.key")
    pull.bind(pull_addr)
    push.connect(push_addr)
    while True:
        frames = pull.recv_multipart(copy=False)
        if frames[0].bytes == b"stop":
            break
        push.send_multipart(frames, copy=False)
    for s in (pull, push):
        s.close(linger=0)
    ctx.term()


def raw_hops(sizes: list[int], curve: bool, n: int = 300) -> dict[int, float]:
    """One-way loopback hop (RTT/2, p50 ms) for [json header, buffer] of each size."""
    import zmq
    from splitter_runtime import keys
    from splitter_runtime.local import free_port

    tmp = tempfile.mkdtemp(prefix="bench-keys-")
    keys.generate(tmp, ["echo", "main"])
    a, b = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--echo", a, b, tmp if curve else "-"],
        stdin=subprocess.DEVNULL,
    )
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    try:
        if curve:
            pull.curve_publickey, pull.curve_secretkey = keys.load_pair(f"{tmp}/main.key_secret")
            pull.curve_server = True
            push.curve_publickey, push.curve_secretkey = keys.load_pair(f"{tmp}/main.key_secret")
            push.curve_serverkey = keys.load_public(f"{tmp}/echo.key")
        pull.bind(b)
        push.connect(a)
        out = {}
        for size in sizes:
            buf = np.ones(size // 4, np.float32)
            hdr = json.dumps({"v": 1, "kind": "data", "id": "x", "tensors": []}).encode()
            times = []
            for i in range(n + 20):
                t0 = time.perf_counter()
                push.send_multipart([hdr, buf], copy=False)
                if not pull.poll(10_000):
                    raise RuntimeError("raw echo did not answer within 10 s")
                pull.recv_multipart(copy=False)
                if i >= 20:
                    times.append((time.perf_counter() - t0) * 1000 / 2)
            out[size] = float(np.percentile(times, 50))
        push.send_multipart([b"stop"])
        proc.wait(10)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


# -- models ----------------------------------------------------------------------------------
def build(work: Path, model_kind: str) -> tuple[Path, dict]:
    """Save the model and slice it; return (slice dir, manifest)."""
    import keras

    from splitter.examples import build_example_model
    from splitter.slicing import slice_model

    keras.utils.set_random_seed(0)
    if model_kind == "example":
        model = build_example_model("mobilenetv2")
    else:
        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    path = work / "model.keras"
    model.save(path)
    slice_model(path, work / "slices", force=True)
    manifest = json.loads((work / "slices" / "manifest.json").read_text())
    return work / "slices", manifest


def balanced_ranges(manifest: dict, k: int) -> list[tuple[int, int]]:
    """k contiguous ranges with about equal FLOPs."""
    flops = np.cumsum([s["flops_per_sample"] for s in manifest["slices"]])
    cuts = [int(np.searchsorted(flops, flops[-1] * j / k)) for j in range(1, k)]
    bounds = [0, *cuts, len(manifest["slices"])]
    return list(itertools.pairwise(bounds))


def inputs_for(spec, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t.name: rng.random([batch, *t.shape[1:]]).astype(t.dtype) for t in spec.inputs}


def time_backend(kind: str, path: Path, spec, threads: int, n: int) -> tuple[float, float]:
    """p50/p99 ms of one stage run in this process with the runtime's backend code."""
    from splitter_runtime import backends

    be = backends.load(kind, path, threads)
    x = inputs_for(spec)
    for _ in range(max(5, n // 10)):
        be.run(x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        be.run(x)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def check_conversions(slice_dir: Path, plans: dict, specs: dict) -> None:
    """Every LiteRT stage must match its Keras stage model; say so loudly when not."""
    from splitter_runtime import backends

    from splitter.stages import build_stage_model

    for k, ranges in plans.items():
        for (start, stop), spec in zip(ranges, specs[k], strict=True):
            x = inputs_for(spec, seed=3)
            ref = build_stage_model(slice_dir, start, stop)(x)
            got = backends.load(spec.backend, spec.model_file, 1).run(x)
            diff = max(float(np.max(np.abs(got[n] - np.asarray(ref[n])))) for n in got)
            if not diff <= 1e-3:
                print(
                    f"WARNING: {k}-stage split, stage [{start}, {stop}) as {spec.backend} differs "
                    f"from Keras by {diff} (broken conversion: timings below are not meaningful)"
                )


# -- pipelines -------------------------------------------------------------------------------
def run_pipeline(
    specs, work: Path, n_lat: int, n_thr: int, window: int, curve: bool = True
) -> dict:
    from splitter_runtime.local import LocalPipeline

    limits = {"max_in_flight": 1024}
    p = LocalPipeline(specs, work, log_level="WARNING", limits=limits, curve=curve)
    p.start(timeout_s=120)
    try:
        with p.client(timeout_s=60, max_in_flight=window) as c:
            x = next(iter(inputs_for(specs[0]).values()))
            for _ in range(30):
                c.predict(x)
            lat = []
            for _ in range(n_lat):
                t0 = time.perf_counter()
                c.predict(x)
                lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.6)  # let heartbeats carry the stages' compute figures
            status = c.status()
            compute = [s["status"]["compute_p50_ms"] for s in status["stages"]]
            t0 = time.perf_counter()
            done = sum(1 for _ in c.map((x for _ in range(n_thr)), window=window))
            rps = done / (time.perf_counter() - t0)
        return {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "rps": rps,
            "stage_compute_p50": compute,
        }
    finally:
        p.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["224", "example"], default="224")
    ap.add_argument("--threads", type=int, default=1, help="inference threads everywhere")
    ap.add_argument("--n", type=int, default=300, help="requests per latency measurement")
    ap.add_argument("--echo", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo:
        _echo(*args.echo)
        return

    from splitter.run_local import build_stage_files

    ncpu = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    t0 = time.perf_counter()
    slice_dir, manifest = build(work, args.model)
    plans = {k: balanced_ranges(manifest, k) for k in (1, 2, 3)}
    specs = {
        k: build_stage_files(slice_dir, r, work / f"k{k}", num_threads=args.threads)
        for k, r in plans.items()
    }
    keras_mid = build_stage_files(
        slice_dir, [plans[3][1]], work / "keras", backends=["tensorflow"], names=["mid"]
    )[0]
    print(
        f"model: MobileNetV2 {'96×96 α0.35' if args.model == 'example' else '224×224 α1.0'} "
        f"(weights=None), {len(manifest['slices'])} slices; built in "
        f"{time.perf_counter() - t0:.0f} s; cores: {ncpu}; threads per model: {args.threads}"
    )
    check_conversions(slice_dir, plans, specs)
    cut_bytes = [c["bytes_per_sample"] for c in manifest["cuts"]]
    for k in (2, 3):
        print(f"  {k} stages: ranges {plans[k]}, cut bytes {[cut_bytes[b] for _, b in plans[k]]}")

    # 1. in-process compute: monolithic and each stage, pinned to one core like a stage.
    os.sched_setaffinity(0, {0})
    mono = time_backend("litert", specs[1][0].model_file, specs[1][0], args.threads, args.n)
    stage_alone = {
        k: [time_backend("litert", s.model_file, s, args.threads, args.n) for s in specs[k]]
        for k in (2, 3)
    }
    mid = specs[3][1]
    lite_mid = stage_alone[3][1]
    tf_mid = time_backend("tensorflow", keras_mid.model_file, mid, args.threads, args.n // 3)
    eager_mid = time_backend("keras", keras_mid.model_file, mid, args.threads, args.n // 10)
    os.sched_setaffinity(0, set(range(ncpu)))

    # 2. the floor: raw pyzmq hops for every payload size the pipelines send.
    inp, out = cut_bytes[0], cut_bytes[-1]
    hop_bytes = {k: [inp, inp, *[cut_bytes[b] for _, b in plans[k][:-1]], out, out] for k in (2, 3)}
    sizes = sorted({b for v in hop_bytes.values() for b in v})
    raw = raw_hops(sizes, curve=False, n=args.n)
    raw_curve = raw_hops(sizes, curve=True, n=args.n)

    # 3. the pipelines with CURVE (the default) and without (to separate crypto from the
    #    runtime's own cost); free = the OS places processes (latency), pinned = stage i on
    #    core i mod ncpu (the throughput target's condition).
    results = {}
    for k in (2, 3):
        for curve, pinned in ((True, False), (False, False), (True, True)):
            for i, s in enumerate(specs[k]):
                s.cpus = [i % ncpu] if pinned else None
            results[k, curve, pinned] = run_pipeline(
                specs[k], work / f"run{k}{curve}{pinned}", args.n, 4 * args.n, 32, curve
            )

    print("\nraw pyzmq loopback hop, one way (p50 ms)")
    print(f"  {'bytes':>10} {'plain':>8} {'CURVE':>8} {'CURVE/plain':>12}")
    for b in sizes:
        print(f"  {b:>10} {raw[b]:>8.3f} {raw_curve[b]:>8.3f} {raw_curve[b] / raw[b]:>11.2f}×")

    print("\nin-process compute, batch 1 (p50 / p99 ms)")
    print(f"  monolithic LiteRT          {mono[0]:8.3f} / {mono[1]:8.3f}")
    for k in (2, 3):
        for i, (p50, p99) in enumerate(stage_alone[k]):
            print(f"  {k}-stage split, stage {i}    {p50:8.3f} / {p99:8.3f}")
    print(
        f"  middle stage: LiteRT {lite_mid[0]:.3f}, tf.function {tf_mid[0]:.3f} "
        f"({tf_mid[0] / lite_mid[0]:.1f}×), Keras eager {eager_mid[0]:.3f} "
        f"({eager_mid[0] / lite_mid[0]:.1f}×)"
    )

    print("\npipelines (batch 1, LiteRT; ovh/raw compares with the raw hop of the same security)")
    head = (
        f"  {'':17}{'p50 ms':>9}{'p99 ms':>9}{'vs mono':>9}{'rps':>9}{'mono rps':>9}"
        f"{'bound rps':>10}{'thr/bound':>10}{'ovh/hop ms':>11}{'raw/hop':>9}{'ovh/raw':>9}"
    )
    print(head)
    lines = []
    for k in (2, 3):
        hops = hop_bytes[k]
        bound = 1000 / max(p50 for p50, _ in stage_alone[k])
        ratio = {}
        for curve, pinned in ((True, False), (False, False), (True, True)):
            r = results[k, curve, pinned]
            overhead = r["p50"] - sum(r["stage_compute_p50"])
            floor = sum((raw_curve if curve else raw)[b] for b in hops)
            ratio[curve, pinned] = (overhead / floor, r["rps"] / bound)
            label = f"{k} st {'CURVE' if curve else 'plain'} {'pinned' if pinned else 'free'}"
            print(
                f"  {label:17}{r['p50']:9.3f}{r['p99']:9.3f}{r['p50'] / mono[0]:8.2f}×"
                f"{r['rps']:9.1f}{1000 / mono[0]:9.1f}{bound:10.1f}{r['rps'] / bound:9.2f}×"
                f"{overhead / len(hops):11.3f}{floor / len(hops):9.3f}{overhead / floor:8.2f}×"
            )
        cores = f"{k} pinned stages + gateway + client on {ncpu} cores"
        lines += [
            f"bench: hop_overhead_vs_raw_plain_{k}stage = {ratio[False, False][0]:.2f} x "
            "(target <= 1.5)",
            f"bench: hop_overhead_vs_raw_curve_{k}stage = {ratio[True, False][0]:.2f} x "
            "(target <= 1.5)",
            f"bench: pipelined_throughput_vs_slowest_stage_{k}stage = "
            f"{ratio[True, True][1]:.2f} x (target >= 0.85) [CURVE; {cores}]",
        ]
    print(
        f"  ({len(hop_bytes[2])} and {len(hop_bytes[3])} hops: client→gateway→s0→…→gateway"
        "→client; overhead = p50 − Σ in-stage compute p50)"
    )
    lines.append(
        f"bench: litert_vs_tf_function_same_stage = {tf_mid[0] / lite_mid[0]:.1f} x (target >= 3)"
    )
    lines.append(
        f"bench: litert_vs_keras_eager_same_stage = {eager_mid[0] / lite_mid[0]:.1f} x "
        "(target >= 3)"
    )
    print()
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
