#!/usr/bin/python
# Copyright: splitter developers
# Apache License 2.0 (see LICENSE)
"""Ansible module: time every slice of a bundle on this device with its LiteRT backend."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: slice_benchmark
short_description: Time and size every slice of a splitter slice bundle on the device
version_added: "1.0.0"
description:
  - Reads a bundle (a tar archive with C(index.json) and one C(.tflite) per slice, made by
    C(splitter benchmark)), checks every file's sha256, and measures each slice at each batch
    size with the LiteRT interpreter (XNNPACK), the backend the device will serve with.
  - Each slice runs in a fresh process forked from a parent that has already imported the
    runtime, so its peak memory (VmHWM) is its own and not hidden by memory freed earlier.
  - A slice whose estimated memory exceeds C(usable_memory_bytes), or whose process is killed
    for memory, is recorded as not fitting (C(fits=false)); it is not a failure.
  - Must run with a Python that has C(numpy) and C(ai_edge_litert) (the splitter runtime's
    virtual environment, see the C(splitter.pipeline.runtime) role).
author:
  - splitter developers
options:
  bundle:
    description: Path of the bundle tar on the device.
    type: path
    required: true
  batch_sizes:
    description: Batch sizes to measure, ascending.
    type: list
    elements: int
    default: [1]
  num_threads:
    description: Interpreter threads; 0 means the device's effective CPUs (rounded up).
    type: int
    default: 0
  min_repeats:
    description: Timing samples per slice and batch size, at least.
    type: int
    default: 3
  max_repeats:
    description: Timing samples per slice and batch size, at most.
    type: int
    default: 20
  min_time_s:
    description:
      - Length of one timing sample; each sample is the mean of back-to-back runs over this
        window, so a cgroup CPU quota's throttling shows up as it would in service.
    type: float
    default: 0.015
  usable_memory_bytes:
    description:
      - Memory a stage may use on this device; a slice estimated to need more is not run.
      - 0 disables the check (a slice killed by the kernel for memory is still caught).
    type: int
    default: 0
  slice_timeout_s:
    description: A slice measurement taking longer than this is recorded as failed.
    type: float
    default: 120
attributes:
  check_mode:
    support: full
    details: Measures nothing in check mode; returns empty results.
  diff_mode:
    support: none
requirements:
  - numpy
  - ai-edge-litert
"""

EXAMPLES = r"""
- name: Time every slice at batch sizes 1 and 8
  splitter.pipeline.slice_benchmark:
    bundle: /var/lib/splitter/benchmark/bundle.tar
    batch_sizes: [1, 8]
    usable_memory_bytes: "{{ ansible_facts['splitter_device']['memory']['usable_bytes'] }}"
  vars:
    ansible_python_interpreter: "{{ runtime_python }}"
  register: __timings
"""

RETURN = r"""
backend:
  description: The backend measured with.
  returned: success
  type: str
  sample: litert
num_threads:
  description: Interpreter threads used.
  returned: success
  type: int
runtime_overhead_bytes:
  description: Resident memory of a process that has imported the runtime (before any model).
  returned: success
  type: int
compute:
  description: >-
    Per batch size (string key), lists indexed by slice - C(median_ms), C(p90_ms),
    C(peak_activation_bytes) (peak resident memory above the runtime and the weights) and
    C(fits); null timings where the slice did not fit or failed. When the bundle holds the
    whole model as one file too, C(whole_median_ms) and C(whole_p90_ms) time it at that
    batch size (the controller calibrates the per-slice figures with it).
  returned: success
  type: dict
messaging:
  description: >-
    The runtime's CPU cost per message on this device (C(fixed_ms), C(ms_per_mb)): encode,
    CURVE, send, receive and decode through a loopback pair; null when the runtime is too old.
  returned: success
  type: dict
errors:
  description: Slices that failed for another reason than memory, with the reason.
  returned: success
  type: list
  elements: dict
seconds:
  description: Wall time of the whole measurement.
  returned: success
  type: float
"""

import contextlib
import hashlib
import json
import math
import os
import select
import signal
import tarfile
import threading
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    IMPORT_ERROR = None
except ImportError as error:  # reported through fail_json with the fix
    IMPORT_ERROR = error

RESULT_LIMIT = 1 << 20


def status_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure_one(model_path, inputs, batch, threads, min_repeats, max_repeats, min_time):
    """In the forked child: load, run at ``batch``, time, report peak memory above start."""
    reset_peak()
    base = status_kib("VmRSS")
    interpreter = Interpreter(model_path=model_path, num_threads=threads)
    runner = interpreter.get_signature_runner()
    rng = np.random.default_rng(0)
    feed = {}
    for spec in inputs:
        shape = [batch] + [d if d else 1 for d in spec["shape"][1:]]
        dtype = np.dtype(spec["dtype"])
        if np.issubdtype(dtype, np.floating):
            feed[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[spec["name"]] = np.zeros(shape, dtype=dtype)
    for _ in range(2):  # warm-up: allocation, XNNPACK weight packing
        runner(**feed)
    # Each sample is the mean over a window of back-to-back runs: a CPU quota (cgroup CFS)
    # throttles only over whole periods, and that slowdown is what a stage would see.
    samples = []
    started = time.perf_counter()
    while len(samples) < max_repeats and (
        len(samples) < min_repeats or time.perf_counter() - started < min_time * min_repeats
    ):
        runs, tick = 0, time.perf_counter()
        while runs == 0 or time.perf_counter() - tick < min_time:
            runner(**feed)
            runs += 1
        samples.append((time.perf_counter() - tick) * 1000.0 / runs)
    times = samples
    peak = status_kib("VmHWM")
    times.sort()
    return {
        "median_ms": times[len(times) // 2],
        "p90_ms": times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)],
        "peak_bytes": max(0, peak - base),
    }


CURRENT_CHILD = {"pid": None}


def run_in_child(function, timeout, *args):
    """Fork, run ``function`` there, return (result, None) or (None, reason)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            payload = json.dumps({"ok": function(*args)})
        except BaseException as error:  # report anything, never return into Ansible
            payload = json.dumps({"error": f"{type(error).__name__}: {error}"[:500]})
        os.write(write_end, payload.encode())
        os._exit(0)
    CURRENT_CHILD["pid"] = pid
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None, "timeout"
            ready, _, _ = select.select([read_end], [], [], min(remaining, 1.0))
            if ready:
                data = os.read(read_end, RESULT_LIMIT)
                if not data:
                    break
                chunks.append(data)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(read_end)
        CURRENT_CHILD["pid"] = None
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return None, "killed (out of memory)"
    if not chunks:
        return None, f"exited with status {status}"
    message = json.loads(b"".join(chunks))
    if "error" in message:
        return None, message["error"]
    return message["ok"], None


def watch_connection(original_parent):
    """Exit when Ansible's connection goes away (Ctrl-C on the controller): no orphans.

    Two signs: our parent changed (the shell died), or our stdout pipe lost its reader
    (sshd closed the channel; with SSH multiplexing the session itself may linger).
    """
    poller = select.poll()
    poller.register(1, select.POLLERR | select.POLLHUP)

    def watch():
        while os.getppid() == original_parent and not poller.poll(500):
            pass
        if CURRENT_CHILD["pid"]:
            with contextlib.suppress(OSError):
                os.kill(CURRENT_CHILD["pid"], signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def read_bundle(module, path):
    try:
        return _unpack_bundle(module, path)
    except (OSError, KeyError, ValueError, tarfile.TarError) as error:
        module.fail_json(msg=f"cannot read bundle {path}: {error}; re-run splitter benchmark")


def _unpack_bundle(module, path):
    """Unpack next to the bundle, checking every file; slices load from disk (mmap), so the
    parent never holds all the weights in memory on a small device."""
    target = os.path.splitext(path)[0] + ".d"
    os.makedirs(target, mode=0o700, exist_ok=True)
    with tarfile.open(path) as archive:
        index = json.loads(archive.extractfile("index.json").read())
        models = {}
        entries = list(index["slices"])
        if index.get("whole"):
            entries.append({**index["whole"], "index": "whole"})
        for entry in entries:
            name = os.path.basename(entry["file"])
            digest = hashlib.sha256()
            destination = os.path.join(target, name)
            with archive.extractfile(entry["file"]) as source, open(destination, "wb") as out:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != entry["tflite_sha256"]:
                module.fail_json(msg=f"bundle file {name} fails its sha256 check")
            models[entry["index"]] = destination
    return index, models


def estimate_need(entry, batch, overhead):
    return 2 * entry["param_bytes"] + entry["activation_bytes_per_sample"] * batch + overhead


def main():
    module = AnsibleModule(
        argument_spec={
            "bundle": {"type": "path", "required": True},
            "batch_sizes": {"type": "list", "elements": "int", "default": [1]},
            "num_threads": {"type": "int", "default": 0},
            "min_repeats": {"type": "int", "default": 3},
            "max_repeats": {"type": "int", "default": 20},
            "min_time_s": {"type": "float", "default": 0.015},
            "usable_memory_bytes": {"type": "int", "default": 0},
            "slice_timeout_s": {"type": "float", "default": 120.0},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(
            msg=missing_required_lib("numpy and ai-edge-litert")
            + " Run it with the runtime's Python (the splitter.pipeline.runtime role sets "
            "runtime_python).",
            exception=str(IMPORT_ERROR),
        )
    if module.check_mode:
        module.exit_json(changed=False, backend="litert", compute={}, errors=[], seconds=0.0)
    params = module.params
    batch_sizes = sorted(set(params["batch_sizes"]))
    if not batch_sizes or batch_sizes[0] < 1:
        module.fail_json(msg=f"batch_sizes must be positive integers, got {batch_sizes}")
    started = time.perf_counter()
    watch_connection(os.getppid())
    index, models = read_bundle(module, params["bundle"])
    threads = params["num_threads"] or len(os.sched_getaffinity(0))
    overhead = status_kib("VmRSS")
    usable = params["usable_memory_bytes"]
    compute, errors = {}, []
    count = len(index["slices"])
    for batch in batch_sizes:
        table = {"median_ms": [None] * count, "p90_ms": [None] * count,
                 "peak_activation_bytes": [None] * count, "fits": [False] * count}  # fmt: skip
        for entry in index["slices"]:
            position = entry["index"]
            if usable and estimate_need(entry, batch, overhead) > usable:
                continue  # does not fit: recorded, not run
            result, reason = run_in_child(
                measure_one, params["slice_timeout_s"], models[position], entry["inputs"],
                batch, threads, params["min_repeats"], params["max_repeats"], params["min_time_s"],
            )  # fmt: skip
            if result is None:
                if reason != "killed (out of memory)":
                    errors.append({"slice": position, "batch_size": batch, "reason": reason})
                continue
            table["median_ms"][position] = round(result["median_ms"], 4)
            table["p90_ms"][position] = round(result["p90_ms"], 4)
            # XNNPACK packs the weights (~2x their size); the planner adds those itself.
            packed = 2 * entry["param_bytes"]
            table["peak_activation_bytes"][position] = max(0, result["peak_bytes"] - packed)
            table["fits"][position] = True
        whole = index.get("whole")
        need = estimate_need(whole, batch, overhead) if whole else 0
        if whole and all(table["fits"]) and not (usable and need > usable):
            result, reason = run_in_child(
                measure_one, params["slice_timeout_s"], models["whole"], whole["inputs"],
                batch, threads, params["min_repeats"], params["max_repeats"], params["min_time_s"],
            )  # fmt: skip
            if result is not None:
                table["whole_median_ms"] = round(result["median_ms"], 4)
                table["whole_p90_ms"] = round(result["p90_ms"], 4)
            else:
                errors.append({"slice": "whole", "batch_size": batch, "reason": reason})
        compute[str(batch)] = table
    messaging = None
    try:  # the runtime's own per-message cost on this device (runtime python only)
        from splitter_runtime.msgcost import measure as measure_messaging

        messaging = measure_messaging()
    except Exception as error:  # an older runtime without msgcost: planned without it
        errors.append({"slice": "messaging", "batch_size": 0, "reason": str(error)[:300]})
    module.exit_json(
        changed=False,
        backend="litert",
        num_threads=threads,
        runtime_overhead_bytes=overhead,
        compute=compute,
        messaging=messaging,
        errors=errors,
        seconds=round(time.perf_counter() - started, 3),
    )


if __name__ == "__main__":
    main()
