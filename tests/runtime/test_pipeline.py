"""A real 3-stage MobileNetV2 pipeline on local processes, over real CURVE-secured sockets."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import numpy as np
import pytest
import zmq
from splitter_runtime import keys, wire
from splitter_runtime.client import Client
from splitter_runtime.errors import RequestFailed, RequestRefused, RequestTimeout

pytestmark = pytest.mark.timeout(240)


def image(batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 96, 96, 3), dtype=np.float32)


def only(out: dict[str, np.ndarray]) -> np.ndarray:
    (value,) = out.values()
    return value


def wait_for(predicate, timeout_s: float = 30.0, every_s: float = 0.1):
    """Poll until ``predicate()`` is truthy (bounded); return its value or fail the test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"condition not met within {timeout_s} s")


def test_three_stages_give_the_whole_models_outputs(pipelines, stages3, reference):
    p = pipelines(stages3)
    with p.client(timeout_s=30) as c:
        for batch, seed in ((1, 0), (4, 1)):
            x = image(batch, seed)
            got = only(c.predict(x))
            want = reference(x)
            assert got.shape == want.shape == (batch, 10)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        # Many in flight at once: each result is matched to its own request id.
        xs = [image(1, 100 + i) for i in range(24)]
        futures = [c.submit(x) for x in xs]
        for x, fut in zip(xs, futures, strict=True):
            np.testing.assert_allclose(only(fut.result(60)), reference(x), rtol=1e-4, atol=1e-5)
        assert list(c.map(xs[:3], window=2))[2].keys() == {"predictions__0__0"}
        # predict() from several threads at once: one on the direct socket, the others through
        # the I/O thread; each gets its own answer and nothing stays pending.
        outs: dict[int, np.ndarray] = {}
        threads = [
            threading.Thread(target=lambda i=i: outs.__setitem__(i, only(c.predict(xs[i]))))
            for i in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for i in range(4):
            np.testing.assert_allclose(outs[i], reference(xs[i]), rtol=1e-4, atol=1e-5)
        assert c.pending() == []
        status = c.status()
    assert status["ready"] and status["gateway"]["served"] >= 31
    assert [s["state"] for s in status["stages"]] == ["up", "up", "up"]
    health = p.health("s1")
    for key in ("served", "failed", "latency_p50_ms", "latency_p99_ms", "queue_depth", "rss_bytes"):
        assert key in health
    assert health["served"] >= 31 and health["rss_bytes"] > 0


def test_bad_input_gets_an_explicit_error_naming_cause_and_fix(pipelines, stages3):
    p = pipelines(stages3)
    with p.client(timeout_s=30) as c:
        name = c.info()["inputs"][0]["name"]
        fut = c._submit("infer", {name: np.zeros((1, 32, 32, 3), np.float32)}, 10)
        with pytest.raises(RequestFailed, match=r"shape .* expected") as err:
            fut.result(30)
        assert err.value.fix
        fut = c._submit("infer", {name: np.zeros((1, 96, 96, 3), np.float64)}, 10)
        with pytest.raises(RequestFailed, match="astype"):
            fut.result(30)
        np.testing.assert_equal(only(c.predict(image())).shape, (1, 10))  # still serving


def test_malformed_frames_into_a_stage_are_answered_and_it_keeps_serving(pipelines, stages3):
    p = pipelines(stages3)
    # Act as s1's legitimate upstream (s0's key), and send damaged messages into s1.
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.curve_publickey, push.curve_secretkey = keys.load_pair(p.key("s0", True))
    push.curve_serverkey = keys.load_public(p.key("s1"))
    push.connect(p.data_addresses[1])
    good = wire.encode(
        "data",
        "x1",
        {t.name: np.zeros([1, *t.shape[1:]], t.dtype) for t in stages3[1].inputs},
    )
    bad = [
        [b"junk"],  # no id: can only be logged
        [b'{"v":1,"kind":"data","id":"bad-1","tensors":[]}'],  # wrong tensors
        [good[0], good[1]],  # frame missing
        [good[0], good[1], b"\x00" * 3],  # wrong byte length
        [
            wire.header_bytes("data", "bad-4", [{"name": "x", "dtype": "object", "shape": [1]}]),
            b"1",
        ],
    ]
    try:
        for frames in bad:
            push.send_multipart(frames, copy=False)
        with p.client(timeout_s=30) as c:
            # Four named an id: their error replies travelled down to the gateway (which had no
            # client waiting for those ids, and counts them as late). The junk is only logged.
            wait_for(lambda: c.status()["gateway"]["late"] >= 4)
            assert p.health("s1")["rejected"] == 5
            np.testing.assert_equal(only(c.predict(image())).shape, (1, 10))
            assert p.health("s1")["state"] == "serving"
    finally:
        push.close()
        ctx.term()


def test_a_client_without_an_allowed_key_is_refused(pipelines, stages3, tmp_path):
    p = pipelines(stages3)
    keys.generate(tmp_path / "intruder", ["intruder"])
    with Client(
        p.client_address,
        secret_key=tmp_path / "intruder" / "intruder.key_secret",
        server_key=p.key("gateway"),
        timeout_s=2.0,
    ) as intruder:
        with pytest.raises(RequestRefused, match="refused this client's key"):
            intruder.predict({"input_layer__0__0": image()})
        with pytest.raises(RequestTimeout):
            intruder.status(timeout_s=1.0)  # cannot read anything either
    with (
        Client(p.client_address, curve=False, timeout_s=2.0) as plain,
        pytest.raises(RequestTimeout),
    ):
        plain.status(timeout_s=1.0)  # no encryption at all: no answer either
    with p.client() as c:
        g = c.status()["gateway"]
        assert g["auth_denied"] >= 1 and g["served"] == 0
    # A stage admits only its listed upstream: the (valid) client key cannot feed s1 directly.
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.curve_publickey, push.curve_secretkey = keys.load_pair(p.key("client", True))
    push.curve_serverkey = keys.load_public(p.key("s1"))
    try:
        push.connect(p.data_addresses[1])
        wait_for(lambda: p.health("s1")["auth_denied"] >= 1)
        assert p.health("s1")["served"] == 0
    finally:
        push.close()
        ctx.term()


def test_a_killed_middle_stage_is_reported_and_in_flight_requests_fail(pipelines, stages3):
    p = pipelines(stages3, dead_after_ms=3000, limits={"drain_timeout_ms": 2000})
    with p.client(timeout_s=120, max_in_flight=64) as c:
        assert only(c.predict(image())).shape == (1, 10)
        os.kill(p.procs["s1"].pid, signal.SIGSTOP)  # freeze it so requests pile up in flight
        futures = [c.submit(image(1, i), timeout_s=120) for i in range(20)]
        wait_for(lambda: c.status()["gateway"]["in_flight"] == 20)
        p.kill("s1")  # SIGKILL: a crash, no goodbye heartbeat
        errors = []
        for fut in futures:  # the timeout is 120 s: an answer now must come from health
            with pytest.raises(RequestFailed) as err:
                fut.result(60)
            errors.append(err.value)
        assert all(not isinstance(e, RequestTimeout) for e in errors)
        assert all(e.stage == "s1" and "heartbeats" in e.cause for e in errors)
        status = c.status()
        states = {s["name"]: s["state"] for s in status["stages"]}
        assert states == {"s0": "up", "s1": "dead", "s2": "up"}  # the others keep reporting
        with pytest.raises(RequestFailed, match="stage s1 is dead"):
            c.predict(image())
    assert p.procs["s0"].poll() is None and p.procs["s2"].poll() is None


@pytest.mark.parametrize("dead_after_ms", [1500, 60_000])
def test_a_crashed_stage_that_comes_back_loses_no_request(
    pipelines, stages3, reference, dead_after_ms
):
    # What a supervisor does after a crash: the same stage starts again from its config. With
    # resubmit=True the client sends every request that failed meanwhile again, and each
    # answer is still its own request's. At 60 s the gateway cannot have missed a heartbeat:
    # it must tell the restart by the new pid in the beats.
    p = pipelines(stages3, dead_after_ms=dead_after_ms)
    xs = [image(1, 200 + i) for i in range(40)]
    with p.client(timeout_s=50, max_in_flight=64, resubmit=True) as c:
        c.predict(xs[0])
        os.kill(p.procs["s1"].pid, signal.SIGSTOP)  # requests pile up in flight behind it
        results: list = []
        failure: list = []

        def stream() -> None:
            try:
                results.extend(only(r) for r in c.map(xs, window=16))
            except Exception as exc:  # reported below, not lost in the thread
                failure.append(exc)

        reader = threading.Thread(target=stream)
        reader.start()
        wait_for(lambda: c.status()["gateway"]["in_flight"] == 16)
        p.kill("s1")  # a crash, no goodbye heartbeat
        p.restart("s1")
        reader.join(150)
        assert not reader.is_alive() and not failure, failure
        status = c.status()
    assert len(results) == len(xs)
    for x, got in zip(xs, results, strict=True):
        np.testing.assert_allclose(got, reference(x), rtol=1e-4, atol=1e-5)
    # What died inside s1 was failed and sent again. Requests still queued upstream may reach
    # the new s1 (and be answered) before its first heartbeat gets through, so not all 16.
    assert c.resubmitted >= 1
    assert status["gateway"]["failed"] >= 1
    assert [s["state"] for s in status["stages"]] == ["up", "up", "up"]


def test_without_resubmit_the_crash_is_an_explicit_retryable_failure(pipelines, stages3):
    p = pipelines(stages3, dead_after_ms=1500)
    with p.client(timeout_s=120) as c:
        c.predict(image())
        os.kill(p.procs["s1"].pid, signal.SIGSTOP)
        with pytest.raises(RequestTimeout) as late:  # its own deadline passed: not retryable
            c.predict(image(1, 1), timeout_s=0.3)
        assert not late.value.retryable
        fut = c.submit(image(1, 2))
        wait_for(lambda: c.status()["gateway"]["in_flight"] == 1)
        p.kill("s1")
        with pytest.raises(RequestFailed) as err:
            fut.result(60)
        assert err.value.retryable and err.value.stage == "s1"
        assert err.value.request.inputs  # kept, to be sent again by hand


def test_back_pressure_bounds_queues_and_drops_nothing(pipelines, stages3):
    limits = {"hwm": 2, "max_queue": 2, "max_in_flight": 1000}
    p = pipelines(stages3, dead_after_ms=60_000, limits=limits)
    n = 300  # more than the socket buffers between gateway, s0 and s1 can absorb
    with p.client(timeout_s=120, max_in_flight=n) as c:
        os.kill(p.procs["s1"].pid, signal.SIGSTOP)  # the middle stage stops taking work
        try:
            futures = [c.submit(image(1, i)) for i in range(n)]
            status = wait_for(lambda: (s := c.status())["gateway"]["waiting"] > 0 and s)
            # The gateway still answers while full, and holds the excess instead of pushing it.
            assert status["gateway"]["in_flight"] == n
            assert status["stages"][0]["status"]["queue_depth"] <= 2  # s0: bounded, not growing
        finally:
            os.kill(p.procs["s1"].pid, signal.SIGCONT)
        results = [only(f.result(120)) for f in futures]
    assert len(results) == n and all(r.shape == (1, 10) for r in results)


def test_sigterm_drains_in_flight_requests_and_exits_cleanly(pipelines, stages3):
    p = pipelines(stages3, dead_after_ms=20_000)  # the frozen stage must not count as dead
    c = p.client(timeout_s=60, max_in_flight=64)
    try:
        os.kill(p.procs["s1"].pid, signal.SIGSTOP)  # hold the requests inside the pipeline
        futures = [c.submit(image(1, i)) for i in range(40)]
        wait_for(lambda: c.status()["gateway"]["in_flight"] == 40)
        resume = threading.Timer(0.5, os.kill, (p.procs["s1"].pid, signal.SIGCONT))
        resume.start()
        codes = p.stop()  # SIGTERM: gateway (waits for its in-flight requests), then stages
        resume.join()
        assert codes == {"gateway": 0, "s0": 0, "s1": 0, "s2": 0}
        done = [f for f in futures if f.done()]
        answered = [only(f.result(30)) for f in futures]  # every one answered, none failed
        assert len(answered) == 40, len(done)
    finally:
        c.close()


def test_sigterm_of_one_stage_leaves_no_request_unanswered(pipelines, stages3):
    p = pipelines(stages3)
    with p.client(timeout_s=60, max_in_flight=64) as c:
        futures = [c.submit(image(1, i)) for i in range(40)]
        p.kill("s0", signal.SIGTERM)
        assert p.procs["s0"].wait(30) == 0
        outcomes = []
        for f in futures:
            try:
                f.result(60)
                outcomes.append("ok")
            except RequestFailed as err:
                assert not isinstance(err, RequestTimeout)
                outcomes.append("failed")
        assert len(outcomes) == 40  # each ended with a result or an explicit error
        states = {s["name"]: s["state"] for s in c.status()["stages"]}
        assert states["s0"] == "stopped" and states["s2"] == "up"


def test_a_tensorflow_stage_and_a_litert_stage_agree(pipelines, slice_dir, tmp_path, reference):
    from splitter.run_local import build_stage_files

    specs = build_stage_files(
        slice_dir, [(0, 100), (100, 155)], tmp_path / "m", backends=["litert", "tensorflow"]
    )
    assert [s.backend for s in specs] == ["litert", "tensorflow"]
    assert specs[1].model_file.suffix == ".keras"
    p = pipelines(specs, name="tf")
    with p.client(timeout_s=60) as c:
        x = image(2, 7)
        np.testing.assert_allclose(only(c.predict(x)), reference(x), rtol=1e-4, atol=1e-5)


def test_micro_batching_splits_results_back_to_their_requests(pipelines, stages3, reference):
    specs = [dataclasses.replace(s, batch_size=4) for s in stages3]
    p = pipelines(specs, name="batched")
    with p.client(timeout_s=60, max_in_flight=32) as c:
        os.kill(p.procs["s0"].pid, signal.SIGSTOP)  # let requests queue up, then batch them
        xs = [image(1 + i % 2, 200 + i) for i in range(12)]  # batches of 1 and 2 samples
        futures = [c.submit(x) for x in xs]
        time.sleep(0.3)
        os.kill(p.procs["s0"].pid, signal.SIGCONT)
        for x, fut in zip(xs, futures, strict=True):
            np.testing.assert_allclose(only(fut.result(60)), reference(x), rtol=1e-4, atol=1e-5)
    s0 = p.health("s0")
    assert s0["served"] == 12 and s0["model_calls"] < 12  # some requests shared a model call
