"""Benchmark the runtime: raw pyzmq hop, monolithic model, 2- and 3-stage local pipelines.

    .venv/bin/python bench/pipeline.py --model example  # the figures quoted (≈5 min)
    .venv/bin/python bench/pipeline.py                  # latency on MobileNetV2 224×224

Stages are built the way run-local builds them (splitter.run_local.build_stage_files, whose
conversion checks each LiteRT file against Keras and tries another method if it differs);
the bench checks every converted stage against Keras again and warns when one does not match.

All in one run on this machine, same backend (LiteRT/XNNPACK) and thread count everywhere.
Prints tables with ratios side by side and ends with one ``bench:`` line per target:

- hop overhead (``--model``): (pipeline p50 − Σ stage compute p50) over the same figure for the
  same stage models wired by raw pyzmq: the same processes, hops (client→gateway→s0→…→gateway
  →client), bytes and security, with nothing of ours around the LiteRT call. That is the
  floor the target names ("the raw pyzmq hop for the same bytes") measured where a real stage
  sends: on this VM a send right after work costs ~30 µs against ~5 µs idle, and a model
  call leaves the next Python cold, which an idle ping-pong never pays. Two lower floors are
  printed beside it: stages that spin for their compute (no cache effect), and the idle
  ping-pong hop. Rounds alternate with the floors' runs; processes are placed by the OS; the
  example model's sub-millisecond stages make this the runtime's own cost;
- pipelined throughput / what the slowest stage alone allows (``--throughput-model``, ResNet101
  by default: the target asks whether pipelining keeps the slowest stage busy, which takes
  stages whose compute outweighs moving their tensors. MobileNetV2 224 moves 0.6 MB in and
  0.35 MB between stages, encrypted and copied at every hop, for 1.5 ms of compute: on 2 cores
  that alone is more CPU than the stages, so it measures the machine, not the pipelining; it
  stays as ``--throughput-model 224``). Stage i is pinned to core i; the gateway and the client
  get cores of their own where the machine has k + 2, else they share the stages' cores (the
  line says which). With fewer cores than stages the line says CONDITION NOT MET and prints
  the figure as measured;
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


def _round_trips(out, back, size: int, n: int, what: str, warm: int = 30) -> list[float]:
    """ms of ``n`` round trips of [header, ``size`` bytes] sent on ``out``, answered on ``back``."""
    buf = np.ones(size // 4, np.float32)
    hdr = json.dumps({"v": 1, "kind": "data", "id": "x", "tensors": []}).encode()
    times = []
    for i in range(n + warm):
        t0 = time.perf_counter()
        out.send_multipart([hdr, buf], copy=False)
        if not back.poll(20_000):
            raise RuntimeError(f"{what} did not answer within 20 s")
        back.recv_multipart(copy=False)
        if i >= warm:
            times.append((time.perf_counter() - t0) * 1000)
    return times


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
            times = _round_trips(push, pull, size, n, "the raw echo")
            out[size] = float(np.percentile(times, 50)) / 2
        push.send_multipart([b"stop"])
        proc.wait(10)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


# -- raw pyzmq pipeline (the floor for a pipeline hop) ---------------------------------------
# The ping-pong above is the cheapest a hop gets: its sender has done nothing since its last
# wake-up. A stage sends right after computing, and on a VM that alone makes the send dearer
# (measured here: ~5 µs idle, ~30 µs after 100 µs of work). So the floor for the pipelines is
# the same topology in minimal pyzmq: client → gateway → stage… → gateway → client, each stage
# spinning for its stage's compute time, then sending a buffer of its cut's size.
def _curve_server(sock, keys_dir: str, name: str) -> None:
    from splitter_runtime import keys

    if keys_dir != "-":
        sock.curve_publickey, sock.curve_secretkey = keys.load_pair(f"{keys_dir}/{name}.key_secret")
        sock.curve_server = True


def _curve_client(sock, keys_dir: str, server: str) -> None:
    from splitter_runtime import keys

    if keys_dir != "-":
        sock.curve_publickey, sock.curve_secretkey = keys.load_pair(f"{keys_dir}/client.key_secret")
        sock.curve_serverkey = keys.load_public(f"{keys_dir}/{server}.key")


def _raw_node(role: str, keys_dir: str, bind: str, connect: str, server: str, *extra: str) -> None:
    """One process of the raw pipeline: ``gateway`` (extra: result port) or ``stage``
    (extra: output bytes, spin µs)."""
    import zmq

    ctx = zmq.Context()
    if role == "gateway":
        clients, first, results = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        _curve_server(clients, keys_dir, "gateway")
        _curve_server(results, keys_dir, "gateway")
        _curve_client(first, keys_dir, server)
        clients.bind(bind)
        results.bind(extra[0])
        first.connect(connect)
        poller = zmq.Poller()
        poller.register(clients, zmq.POLLIN)
        poller.register(results, zmq.POLLIN)
        ident = b""
        while True:
            events = dict(poller.poll())
            if clients in events:
                ident, *frames = clients.recv_multipart(copy=False)
                if frames[0].bytes == b"stop":
                    first.send_multipart([b"stop"])
                    break
                first.send_multipart(frames, copy=False)
            if results in events:
                clients.send_multipart([ident, *results.recv_multipart(copy=False)], copy=False)
        socks = (clients, first, results)
    elif len(extra) == 1:  # the stage's model, run through LiteRT with nothing around it
        _raw_model_stage(
            ctx, keys_dir, bind, connect, server, json.loads(Path(extra[0]).read_text())
        )
        ctx.term()
        return
    else:
        import numpy as np

        out = np.ones(max(1, int(extra[0]) // 4), np.float32)
        spin_s = float(extra[1]) / 1e6
        pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        _curve_server(pull, keys_dir, role)
        _curve_client(push, keys_dir, server)
        pull.bind(bind)
        push.connect(connect)
        while True:
            frames = pull.recv_multipart(copy=False)
            if frames[0].bytes == b"stop":
                push.send_multipart([b"stop"])
                break
            until = time.perf_counter() + spin_s
            while time.perf_counter() < until:
                pass
            push.send_multipart([frames[0], out], copy=False)
        socks = (pull, push)
    for sock in socks:
        sock.close(linger=100)
    ctx.term()


def _raw_model_stage(ctx, keys_dir: str, bind: str, connect: str, server: str, cfg: dict) -> None:
    """PULL → the stage model (LiteRT signature runner, as the runtime calls it) → PUSH; at
    the end, write the median compute time where ``cfg["report"]`` says."""
    import zmq
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=cfg["model"], num_threads=cfg["threads"])
    runner = interp.get_signature_runner(next(iter(interp.get_signature_list())))
    ins = [(n, np.dtype(d), tuple(shape)) for n, d, shape in cfg["inputs"]]  # frame order
    outs = cfg["outputs"]
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    _curve_server(pull, keys_dir, cfg["name"])
    _curve_client(push, keys_dir, server)
    pull.bind(bind)
    push.connect(connect)
    times = []
    while True:
        frames = pull.recv_multipart(copy=False)
        if frames[0].bytes == b"stop":
            push.send_multipart([b"stop"])
            break
        feed = {
            n: np.frombuffer(f.buffer, dt).reshape(sh)
            for (n, dt, sh), f in zip(ins, frames[1:], strict=True)
        }
        t0 = time.perf_counter()
        res = runner(**feed)
        times.append(time.perf_counter() - t0)
        push.send_multipart([frames[0], *(res[n] for n in outs)], copy=False)
    Path(cfg["report"]).write_text(str(float(np.median(times[len(times) // 4 :])) * 1000))
    for sock in (pull, push):
        sock.close(linger=100)


def raw_model_pipeline(specs, curve: bool, n: int, threads: int = 1) -> float:
    """p50 ms of the same stage models wired by raw pyzmq, minus their compute medians."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-rawm-"))
    cfgs = []
    for i, spec in enumerate(specs):
        order = [t.name for t in specs[i - 1].outputs] if i else [t.name for t in spec.inputs]
        by_name = {t.name: t for t in spec.inputs}
        cfg = {
            "name": f"s{i}",
            "model": str(spec.model_file),
            "threads": threads,
            "inputs": [
                (nm, by_name[nm].dtype, [1 if d is None else d for d in by_name[nm].shape])
                for nm in order
            ],
            "outputs": [t.name for t in spec.outputs],
            "report": str(tmp / f"s{i}.compute"),
        }
        (tmp / f"s{i}.json").write_text(json.dumps(cfg))
        cfgs.append(str(tmp / f"s{i}.json"))
    in_bytes = int(np.prod([1 if d is None else d for d in specs[0].inputs[0].shape])) * 4
    try:
        p50 = raw_pipeline(in_bytes, [[c] for c in cfgs], curve, n)
        compute = [float((tmp / f"s{i}.compute").read_text()) for i in range(len(specs))]
        return p50 - sum(compute)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def spin_pipeline(
    in_bytes: int, out_bytes: list[int], spin_ms: list[float], curve: bool, n: int
) -> float:
    """p50 ms of raw stages that spin ``spin_ms`` then send ``out_bytes``, minus the spin."""
    stages = [[str(b), str(ms * 1000)] for b, ms in zip(out_bytes, spin_ms, strict=True)]
    return raw_pipeline(in_bytes, stages, curve, n) - sum(spin_ms)


def raw_pipeline(in_bytes: int, stages: list[list[str]], curve: bool, n: int) -> float:
    """p50 ms of a raw pyzmq pipeline; ``stages[i]``: the ``--raw-node`` arguments that say
    what stage i does (a model stage's JSON, or bytes to send and µs to spin)."""
    import zmq
    from splitter_runtime import keys
    from splitter_runtime.ports import free_ports

    k = len(stages)
    tmp = tempfile.mkdtemp(prefix="bench-raw-")
    names = ["gateway", *[f"s{i}" for i in range(k)]]
    keys.generate(tmp, [*names, "client"])
    kd = tmp if curve else "-"
    ports = free_ports(k + 2)
    addr = [f"tcp://127.0.0.1:{p}" for p in ports]  # 0: clients, 1: results, 2+i: stage i
    nodes = [["gateway", kd, addr[0], addr[2], "s0", addr[1]]]
    for i in range(k):
        nxt, server = (addr[3 + i], f"s{i + 1}") if i + 1 < k else (addr[1], "gateway")
        nodes.append([f"s{i}", kd, addr[2 + i], nxt, server, *stages[i]])
    procs = [
        subprocess.Popen([sys.executable, __file__, "--raw-node", *a], stdin=subprocess.DEVNULL)
        for a in nodes
    ]
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    try:
        _curve_client(dealer, kd, "gateway")
        dealer.connect(addr[0])
        times = _round_trips(dealer, dealer, in_bytes, n, "the raw pipeline")
        dealer.send_multipart([b"stop"])
        for proc in procs:
            proc.wait(10)
        return float(np.percentile(times, 50))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        dealer.close(linger=0)
        ctx.term()
        shutil.rmtree(tmp, ignore_errors=True)


# -- models ----------------------------------------------------------------------------------
def build(work: Path, model_kind: str) -> tuple[Path, dict]:
    """Save the model and slice it; return (slice dir, manifest)."""
    import keras

    from splitter.examples import build_example_model
    from splitter.slicing import slice_model

    keras.utils.set_random_seed(0)
    if model_kind == "example":
        model = build_example_model("mobilenetv2")
    elif model_kind == "resnet101":
        model = keras.applications.ResNet101(weights=None, input_shape=(224, 224, 3))
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
    specs,
    work: Path,
    n_lat: int,
    n_thr: int,
    window: int,
    curve: bool = True,
    gateway_cpus: set[int] | None = None,
    client_cpus: set[int] | None = None,
    floor=None,
    rounds: int = 3,
) -> dict:
    """Latency (in ``rounds``, each followed by ``floor(stage compute p50s)``: the raw
    pipelines' overheads by name, so both see the same machine weather) and then throughput."""
    from splitter_runtime.local import LocalPipeline

    limits = {"max_in_flight": 1024}
    p = LocalPipeline(specs, work, log_level="WARNING", limits=limits, curve=curve)
    p.start(timeout_s=120)
    mine = os.sched_getaffinity(0)
    try:
        if gateway_cpus:
            os.sched_setaffinity(p.procs["gateway"].pid, gateway_cpus)
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        with p.client(timeout_s=60, max_in_flight=window) as c:
            x = next(iter(inputs_for(specs[0]).values()))
            for _ in range(30):
                c.predict(x)
            lat, ratios, floors = [], {}, {}
            for _ in range(rounds):
                part = []
                for _ in range(max(1, n_lat // rounds)):
                    t0 = time.perf_counter()
                    c.predict(x)
                    part.append((time.perf_counter() - t0) * 1000)
                lat += part
                time.sleep(0.6)  # let heartbeats carry the stages' compute figures
                compute = [s["status"]["compute_p50_ms"] for s in c.status()["stages"]]
                ours = float(np.percentile(part, 50)) - sum(compute)
                for name, value in (floor(compute) if floor is not None else {}).items():
                    floors.setdefault(name, []).append(value)
                    ratios.setdefault(name, []).append(ours / value)
            t0 = time.perf_counter()
            done = sum(1 for _ in c.map((x for _ in range(n_thr)), window=window))
            rps = done / (time.perf_counter() - t0)
        return {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "rps": rps,
            "stage_compute_p50": compute,
            "floor": {name: float(np.median(v)) for name, v in floors.items()},
            "floor_ratio": {name: float(np.median(v)) for name, v in ratios.items()},
        }
    finally:
        os.sched_setaffinity(0, mine)
        p.stop()


_ALL_CPUS = set(os.sched_getaffinity(0))
MODEL_NAMES = {
    "example": "MobileNetV2 96×96 α0.35",
    "224": "MobileNetV2 224×224 α1.0",
    "resnet101": "ResNet101 224×224",
}


def prepare(kind: str, work: Path, threads: int) -> dict:
    """Build one model's 1-, 2- and 3-stage LiteRT splits (the way run-local builds them)."""
    from splitter.run_local import build_stage_files

    work.mkdir(parents=True, exist_ok=True)
    slice_dir, manifest = build(work, kind)
    plans = {k: balanced_ranges(manifest, k) for k in (1, 2, 3)}
    specs = {
        k: build_stage_files(slice_dir, r, work / f"k{k}", num_threads=threads)
        for k, r in plans.items()
    }
    cut_bytes = [c["bytes_per_sample"] for c in manifest["cuts"]]
    return {
        "kind": kind,
        "slice_dir": slice_dir,
        "manifest": manifest,
        "plans": plans,
        "specs": specs,
        "cut_bytes": cut_bytes,
    }


def stage_times(m: dict, threads: int, n: int) -> dict[int, list[tuple[float, float]]]:
    """Each stage alone, in this process pinned to one core (what one pinned stage allows)."""
    os.sched_setaffinity(0, {0})
    try:
        return {
            k: [time_backend("litert", s.model_file, s, threads, n) for s in m["specs"][k]]
            for k in (1, 2, 3)
        }
    finally:
        os.sched_setaffinity(0, _ALL_CPUS)


def _print_compute(mono: tuple[float, float], alone: dict) -> None:
    """The monolithic model's and every split stage's p50 / p99, one line each."""
    print(f"  monolithic LiteRT          {mono[0]:8.3f} / {mono[1]:8.3f}")
    for k in (2, 3):
        for i, (p50, p99) in enumerate(alone[k]):
            print(f"  {k}-stage split, stage {i}    {p50:8.3f} / {p99:8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["224", "example"], default="224")
    ap.add_argument(
        "--throughput-model",
        choices=sorted(MODEL_NAMES),
        default="resnet101",
        help="model for the pipelined-throughput target: its stages' compute must outweigh "
        "moving their tensors, or the figure measures copying and crypto, not pipelining",
    )
    ap.add_argument("--threads", type=int, default=1, help="inference threads everywhere")
    ap.add_argument("--n", type=int, default=300, help="requests per latency measurement")
    ap.add_argument("--echo", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--raw-node", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo:
        _echo(*args.echo)
        return
    if args.raw_node:
        _raw_node(*args.raw_node)
        return

    from splitter.run_local import build_stage_files

    cpus = sorted(_ALL_CPUS)
    ncpu = len(cpus)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    t0 = time.perf_counter()
    m = prepare(args.model, work / "lat", args.threads)
    thr_m = m if args.throughput_model == args.model else None
    if thr_m is None:
        thr_m = prepare(args.throughput_model, work / "thr", args.threads)
    plans, specs, cut_bytes = m["plans"], m["specs"], m["cut_bytes"]
    keras_mid = build_stage_files(
        m["slice_dir"], [plans[3][1]], work / "keras", backends=["tensorflow"], names=["mid"]
    )[0]
    print(
        f"latency/overhead model: {MODEL_NAMES[args.model]} (weights=None), "
        f"{len(m['manifest']['slices'])} slices; throughput model: "
        f"{MODEL_NAMES[args.throughput_model]}; built in {time.perf_counter() - t0:.0f} s; "
        f"cores: {ncpu}; threads per model: {args.threads}"
    )
    for mm in (m, thr_m) if thr_m is not m else (m,):
        check_conversions(mm["slice_dir"], mm["plans"], mm["specs"])
        cb = mm["cut_bytes"]
        for k in (2, 3):
            print(
                f"  {MODEL_NAMES[mm['kind']]}, {k} stages: ranges {mm['plans'][k]}, "
                f"cut bytes {[cb[b] for _, b in mm['plans'][k]]}"
            )

    # 1. in-process compute: monolithic and each stage, pinned to one core like a stage.
    alone = stage_times(m, args.threads, args.n)
    mono = alone[1][0]
    mid = specs[3][1]
    lite_mid = alone[3][1]
    os.sched_setaffinity(0, {0})
    tf_mid = time_backend("tensorflow", keras_mid.model_file, mid, args.threads, args.n // 3)
    eager_mid = time_backend("keras", keras_mid.model_file, mid, args.threads, args.n // 10)
    os.sched_setaffinity(0, _ALL_CPUS)
    thr_alone = alone if thr_m is m else stage_times(thr_m, args.threads, max(30, args.n // 5))

    # 2. the floor: raw pyzmq hops for every payload size the pipelines send.
    inp, out = cut_bytes[0], cut_bytes[-1]
    hop_bytes = {k: [inp, inp, *[cut_bytes[b] for _, b in plans[k][:-1]], out, out] for k in (2, 3)}
    sizes = sorted({b for v in hop_bytes.values() for b in v})
    raw = raw_hops(sizes, curve=False, n=args.n)
    raw_curve = raw_hops(sizes, curve=True, n=args.n)

    # 3. latency (and free-running throughput) with CURVE (the default) and without (to
    #    separate crypto from the runtime's own cost); the OS places the processes.
    results = {}
    for k in (2, 3):
        for curve in (True, False):
            for s in specs[k]:
                s.cpus = None
            outs = [cut_bytes[b] for _, b in plans[k]]
            results[k, curve] = run_pipeline(
                specs[k],
                work / f"run{k}{curve}",
                args.n,
                4 * args.n,
                32,
                curve,
                floor=lambda compute, outs=outs, curve=curve, k=k: {
                    "model": raw_model_pipeline(specs[k], curve, max(100, args.n // 3)),
                    "spin": spin_pipeline(inp, outs, compute, curve, max(100, args.n // 3)),
                },
            )

    # 4. the throughput target's condition: stage i alone on core i, the gateway and the
    #    client on cores of their own, when this machine has the cores for it.
    thr = {}
    for k in (2, 3):
        slowest = max(p50 for p50, _ in thr_alone[k])
        n_thr = int(min(4 * args.n, max(100, 4000 / slowest)))  # about 4 s of the slowest stage
        for i, s in enumerate(thr_m["specs"][k]):
            s.cpus = [cpus[i % ncpu]]
        own = ncpu >= k + 2
        thr[k] = run_pipeline(
            thr_m["specs"][k],
            work / f"thr{k}",
            min(args.n, 100),
            n_thr,
            32,
            True,
            gateway_cpus={cpus[k]} if own else None,
            client_cpus={cpus[k + 1]} if own else None,
        )
        thr[k]["bound"] = 1000 / slowest
        thr[k]["n"] = n_thr
        if own:
            thr[k]["cores"] = f"{k} stages, gateway and client each on its own core"
        elif ncpu >= k:
            thr[k]["cores"] = (
                f"{k} stages pinned to {k} of {ncpu} cores; gateway and client share them"
            )
        else:
            thr[k]["cores"] = (
                f"CONDITION NOT MET: {k} stages on {ncpu} cores share cores "
                f"({k + 2} needed: one per stage, gateway, client)"
            )

    print("\nraw pyzmq loopback hop, one way (p50 ms)")
    print(f"  {'bytes':>10} {'plain':>8} {'CURVE':>8} {'CURVE/plain':>12}")
    for b in sizes:
        print(f"  {b:>10} {raw[b]:>8.3f} {raw_curve[b]:>8.3f} {raw_curve[b] / raw[b]:>11.2f}×")

    print(f"\nin-process compute, batch 1, one core (p50 / p99 ms), {MODEL_NAMES[args.model]}")
    _print_compute(mono, alone)
    print(
        f"  middle stage: LiteRT {lite_mid[0]:.3f}, tf.function {tf_mid[0]:.3f} "
        f"({tf_mid[0] / lite_mid[0]:.1f}×), Keras eager {eager_mid[0]:.3f} "
        f"({eager_mid[0] / lite_mid[0]:.1f}×)"
    )
    if thr_m is not m:
        print(f"  {MODEL_NAMES[thr_m['kind']]} (throughput model):")
        _print_compute(thr_alone[1][0], thr_alone)

    print(
        f"\npipelines, {MODEL_NAMES[args.model]} (batch 1, LiteRT, processes placed by the OS; "
        "ovh = p50 − Σ stage compute, per hop, against three raw pyzmq floors of the same "
        "security: model = the same stage models wired by raw pyzmq (the target's floor), spin = "
        "stages that spin for their compute, ping = the idle ping-pong hop)"
    )
    head = (
        f"  {'':12}{'p50 ms':>9}{'p99 ms':>9}{'vs mono':>9}{'rps':>9}{'mono rps':>9}"
        f"{'ovh/hop':>9}{'model/hop':>10}{'ovh/model':>10}{'spin/hop':>9}{'ovh/spin':>9}"
        f"{'ping/hop':>9}{'ovh/ping':>9}"
    )
    print(head)
    ratio = {}
    for k in (2, 3):
        hops = hop_bytes[k]
        for curve in (True, False):
            r = results[k, curve]
            overhead = r["p50"] - sum(r["stage_compute_p50"])
            ping = sum((raw_curve if curve else raw)[b] for b in hops)
            ratio[k, curve] = r["floor_ratio"]["model"]
            label = f"{k} st {'CURVE' if curve else 'plain'}"
            n = len(hops)
            floor, fr = r["floor"], r["floor_ratio"]
            print(
                f"  {label:12}{r['p50']:9.3f}{r['p99']:9.3f}{r['p50'] / mono[0]:8.2f}×"
                f"{r['rps']:9.1f}{1000 / mono[0]:9.1f}"
                f"{overhead / n:9.3f}{floor['model'] / n:10.3f}{fr['model']:9.2f}×"
                f"{floor['spin'] / n:9.3f}{fr['spin']:8.2f}×{ping / n:9.3f}{overhead / ping:8.2f}×"
            )
    print(
        f"  ({len(hop_bytes[2])} and {len(hop_bytes[3])} hops: client→gateway→s0→…→gateway"
        "→client; each ovh/floor is the median over 3 rounds, each beside its own floor runs)"
    )

    print(
        f"\npipelined throughput, {MODEL_NAMES[thr_m['kind']]} (CURVE, batch 1, 32 in flight, "
        "stages pinned; bound = 1000 / slowest stage alone p50)"
    )
    for k in (2, 3):
        r = thr[k]
        print(
            f"  {k} st: {r['rps']:.1f} rps over {r['n']} requests, bound {r['bound']:.1f} rps "
            f"-> {r['rps'] / r['bound']:.2f}×; p50 {r['p50']:.3f} ms; {r['cores']}"
        )

    lines = []
    for k in (2, 3):
        r = thr[k]
        lines += [
            f"bench: hop_overhead_vs_raw_plain_{k}stage = {ratio[k, False]:.2f} x (target <= 1.5)",
            f"bench: hop_overhead_vs_raw_curve_{k}stage = {ratio[k, True]:.2f} x (target <= 1.5)",
            f"bench: pipelined_throughput_vs_slowest_stage_{k}stage = "
            f"{r['rps'] / r['bound']:.2f} x (target >= 0.85) "
            f"[CURVE; {MODEL_NAMES[thr_m['kind']]}; {r['cores']}]",
        ]
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
