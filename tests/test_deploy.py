"""The whole flow on a real 3-device lab: slice, benchmark, configure, deploy, predict, status,
redeploy, undo — over real SSH, with real cgroup limits, real TF/LiteRT models and CURVE links.

Each device is snapshotted (files under the install roots, processes in its cgroup, listening
ports) before the first deploy; after undo every snapshot must be equal again.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WATCHED = ("/opt/splitter", "/etc/splitter", "/var/lib/splitter", "/var/log/splitter")
CLI = [str(Path(sys.executable).parent / "splitter")]


def _ssh(lab, device, command: str) -> str:
    known = Path(lab.directory) / "known_hosts"
    done = subprocess.run(
        ["ssh", "-i", str(lab.private_key), "-o", f"UserKnownHostsFile={known}",
         "-o", "BatchMode=yes", f"root@{device.address}", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _cgroup_processes(lab, device) -> list[str]:
    """Command lines of the processes in the device's cgroup (the lab shares the pid space)."""
    for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"):
        procs = Path(base) / device.cgroup / "cgroup.procs"
        if procs.exists():
            break
    lines = []
    for pid in procs.read_text().split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if cmd and not cmd.startswith(("sshd", "/usr/sbin/sshd")):  # our own ssh sessions
            lines.append(cmd)
    return sorted(lines)


def snapshot(lab) -> dict[str, Any]:
    """Per device: every path under the install roots (type, mode, content hash), the
    processes in its cgroup and its listening TCP ports."""
    shot = {}
    for device in lab.devices:
        files = _ssh(
            lab, device, f"find {' '.join(WATCHED)} -printf '%p %y %m ' -exec sh -c "
            "'[ -f \"$1\" ] && sha256sum < \"$1\" | cut -c1-16 || echo -' _ {} \\;",
        )  # fmt: skip
        ports = subprocess.run(
            ["nsenter", f"--net=/run/netns/{device.namespace}", "ss", "-ltnH"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        shot[device.name] = {
            "files": sorted(files.splitlines()),
            "processes": _cgroup_processes(lab, device),
            "ports": sorted(line.split()[3] for line in ports.splitlines() if line.strip()),
        }
    return shot


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def flow(lab, model_files, tmp_path_factory):
    """Slice, benchmark and configure once for the module; give tests an environment whose
    SPLITTER_HOME is private, and the devices' snapshot before anything was deployed."""
    from splitter.benchmark import run_benchmark
    from splitter.slicing import slice_model

    work = tmp_path_factory.mktemp("deploy")
    before = snapshot(lab)
    slices = work / "slices"
    slice_model(model_files("mobilenetv2"), slices)
    run_benchmark(slices, lab.inventory, [1], work / "profile.json")
    env = {**os.environ, "SPLITTER_HOME": str(work / "home"), "COLUMNS": "200"}
    cli("configure", str(work / "profile.json"), "-o", str(work / "plan.yaml"), env=env)
    state = {"work": work, "env": env, "before": before, "slices": slices,
             "plan": work / "plan.yaml", "lab": lab}  # fmt: skip
    yield state
    # whatever a failing test left behind goes too (then the lab fixture removes the lab)
    for name in ("e2e", "cut", "toobig", "plain", "fw"):
        cli("undo", "--name", name, env=env, check=False)


def _deploy(flow, plan: Path, name: str, check: bool = True) -> subprocess.CompletedProcess:
    return cli("deploy", str(plan), "-i", str(flow["lab"].inventory), "--name", name,
               env=flow["env"], check=check)  # fmt: skip


def _record(flow, name: str) -> dict[str, Any]:
    path = Path(flow["env"]["SPLITTER_HOME"]) / "deployments" / name / "deployment.json"
    return json.loads(path.read_text())


def _client(flow, name: str):
    os.environ["SPLITTER_HOME"] = flow["env"]["SPLITTER_HOME"]
    from splitter.deploy import client

    return client(name)


def _stage_pids(flow, name: str) -> dict[str, int]:
    """The child pid of every stage's supervisor, read from its state file on the device."""
    lab, pids = flow["lab"], {}
    for stage in _record(flow, name)["stages"]:
        device = next(d for d in lab.devices if d.name == stage["device"])
        state = _ssh(lab, device, f"cat /var/lib/splitter/{name}/run/splitter-{name}-"
                                  f"{stage['name']}.json")  # fmt: skip
        pids[stage["name"]] = json.loads(state)["child_pid"]
    return pids


def even_plan(plan: dict[str, Any], manifest: dict[str, Any], devices: list[tuple[str, str]]):
    """The same plan with the slices split evenly over ``devices`` (name, address)."""
    count = len(manifest["slices"])
    bounds = [round(i * count / len(devices)) for i in range(len(devices) + 1)]
    template = plan["stages"][0]
    stages = []
    for i, (name, address) in enumerate(devices):
        stage = copy.deepcopy(template)
        stage.update(index=i, device=name, address=address, start=bounds[i], stop=bounds[i + 1])
        cut = lambda p: [t["name"] for t in (manifest["slices"][p]["inputs"] if p < count  # noqa: E731
                                             else manifest["slices"][-1]["outputs"])]  # fmt: skip
        stage.update(inputs=cut(bounds[i]), outputs=cut(bounds[i + 1]))
        stage["receives_from"] = devices[i - 1][0] if i else "controller"
        stage["sends_to"] = devices[i + 1][0] if i + 1 < len(devices) else "controller"
        stages.append(stage)
    return {**plan, "stages": stages}


def test_deploy_serves_the_whole_models_outputs_and_status_shows_every_stage(flow, model_files):
    import keras

    _deploy(flow, flow["plan"], "e2e")
    record, client = _client(flow, "e2e")
    model = keras.saving.load_model(model_files("mobilenetv2"), compile=False)
    rng = np.random.default_rng(3)
    with client as c:
        for _ in range(5):
            x = rng.random((1, 96, 96, 3), dtype=np.float32)
            (got,) = c.predict(x).values()
            np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-4)
        for _ in range(60):
            c.predict(x)
        deadline = time.monotonic() + 5  # stage counters arrive with heartbeats (500 ms)
        while True:
            status = c.status()
            served = [(s.get("status") or {}).get("served", 0) for s in status["stages"]]
            if min(served) >= 65 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert status["ready"]
    assert [s["name"] for s in status["stages"]] == [s["name"] for s in record["stages"]]
    assert all(s["state"] == "up" for s in status["stages"]) and min(served) >= 65, status
    measured = status["gateway"]["latency_p50_ms"]
    predicted = record["predicted"]["latency_ms"]
    print(f"\npredicted {predicted:.2f} ms, measured p50 at the gateway {measured:.2f} ms "
          f"({measured / predicted:.2f}x)")  # fmt: skip
    # configure predicts controller → stages → controller: what the gateway measures
    assert abs(measured / predicted - 1) <= 0.25, (predicted, measured)
    shown = cli("status", "--name", "e2e", env=flow["env"]).stdout
    as_json = json.loads(cli("status", "--name", "e2e", "--json", env=flow["env"]).stdout)
    assert as_json["ready"] and as_json["devices"] == {s["name"]: s["device"]
                                                       for s in record["stages"]}  # fmt: skip
    for stage in record["stages"]:
        assert stage["name"] in shown and stage["device"] in shown
    assert "ready" in shown
    answered = cli("predict", "--name", "e2e", "--random", env=flow["env"]).stdout
    assert "answered in" in answered
    np.save(flow["work"] / "x.npy", x)
    cli("predict", "--input", str(flow["work"] / "x.npy"), "-o", str(flow["work"] / "y.npy"),
        env=flow["env"])  # fmt: skip
    np.testing.assert_allclose(np.load(flow["work"] / "y.npy"),
                               np.asarray(model(x, training=False)), atol=1e-4)  # fmt: skip
    bad = cli("predict", "--input", str(flow["work"] / "y.npy"), env=flow["env"], check=False)
    assert bad.returncode == 2 and "shape" in bad.stdout + bad.stderr


def test_a_second_deploy_of_the_same_plan_changes_nothing_and_restarts_no_stage(flow):
    pids = _stage_pids(flow, "e2e")
    out = _deploy(flow, flow["plan"], "e2e").stdout
    assert "0 changed tasks" in out, out
    assert _stage_pids(flow, "e2e") == pids


def test_a_new_plan_replaces_the_old_stages_cleanly(flow, model_files):
    import keras

    plan = yaml.safe_load(flow["plan"].read_text())
    manifest = json.loads((flow["slices"] / "manifest.json").read_text())
    devices = [(d.name, d.address) for d in flow["lab"].devices]
    even = flow["work"] / "even.yaml"
    even.write_text(yaml.safe_dump(even_plan(plan, manifest, devices), sort_keys=False))
    old = {s["name"]: s["device"] for s in _record(flow, "e2e")["stages"]}
    _deploy(flow, even, "e2e")
    new = {s["name"]: s["device"] for s in _record(flow, "e2e")["stages"]}
    assert len(new) == 3
    lab = flow["lab"]
    for device in lab.devices:
        configs = _ssh(lab, device, "ls /etc/splitter/e2e/").split()
        mine = [n for n, d in new.items() if d == device.name]
        assert sorted(configs) == sorted([f"{n}.yaml" for n in mine] + ["keys"]), (device, old)
        running = [p for p in _cgroup_processes(lab, device)
                   if "-m splitter_runtime.stage" in p and "supervisor" not in p]  # fmt: skip
        assert len(running) == len(mine), running
    model = keras.saving.load_model(model_files("mobilenetv2"), compile=False)
    x = np.random.default_rng(4).random((2, 96, 96, 3), dtype=np.float32)
    _, client = _client(flow, "e2e")
    with client as c:
        (got,) = c.predict(x).values()
    np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-4)


def test_a_stage_that_crashes_on_its_device_is_restarted_and_no_request_is_lost(flow, model_files):
    import keras

    record = _record(flow, "e2e")
    middle = record["stages"][len(record["stages"]) // 2]["name"]
    old = _stage_pids(flow, "e2e")[middle]  # pids are global: lab devices share our pid space
    model = keras.saving.load_model(model_files("mobilenetv2"), compile=False)
    rng = np.random.default_rng(5)
    xs = [rng.random((1, 96, 96, 3), dtype=np.float32) for _ in range(12)]
    _, client = _client(flow, "e2e")  # the controller's client sends retryable failures again
    results, failure = [], []
    with client as c:
        c.predict(xs[0])
        os.kill(old, signal.SIGSTOP)  # requests pile up in flight behind it...

        def stream() -> None:
            try:
                results.extend(next(iter(r.values())) for r in c.map(xs, window=len(xs)))
            except Exception as exc:  # reported below
                failure.append(exc)

        reader = threading.Thread(target=stream)
        reader.start()
        deadline = time.monotonic() + 20
        while c.status()["gateway"]["in_flight"] < len(xs) and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(old, signal.SIGKILL)  # ...and the process dies; its supervisor restarts it
        reader.join(90)
        resubmitted = c.resubmitted
    assert not reader.is_alive() and not failure, failure
    for x, got in zip(xs, results, strict=True):
        np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-4)
    assert resubmitted >= 1  # what died with the process was sent again (not all 12: some
    # still queued upstream can reach the new process before its first heartbeat gets through)
    assert _stage_pids(flow, "e2e")[middle] != old


def test_a_stage_that_no_longer_fits_is_not_started_and_the_error_says_what_to_do(flow):
    plan = yaml.safe_load(flow["plan"].read_text())
    plan["stages"][0]["memory"]["needed_bytes"] = 64 << 30
    big = flow["work"] / "toobig.yaml"
    big.write_text(yaml.safe_dump(plan, sort_keys=False))
    done = _deploy(flow, big, "toobig", check=False)
    assert done.returncode == 2
    text = " ".join((done.stdout + done.stderr).split())
    assert "needs 65536.0 MiB" in text and plan["stages"][0]["device"] in text, text
    assert "splitter configure" in text
    lab = flow["lab"]
    for device in lab.devices:
        assert not any("toobig" in p for p in _cgroup_processes(lab, device))
    cli("undo", "--name", "toobig", env=flow["env"])


def test_undo_with_an_unreachable_device_cleans_the_rest_and_can_run_again(flow):
    lab = flow["lab"]
    inventory = yaml.safe_load(lab.inventory.read_text())
    hosts = inventory["all"]["children"]["splitter_devices"]["hosts"]
    hosts["dev2"]["ansible_host"] = "10.231.254.254"  # nobody answers there
    broken = flow["work"] / "broken.yml"
    broken.write_text(yaml.safe_dump(inventory))
    done = cli("undo", "--name", "e2e", "-i", str(broken), env=flow["env"], check=False)
    assert done.returncode == 2
    said = " ".join((done.stdout + done.stderr).split())
    assert "dev2: unreachable" in said and "undo --name e2e" in said, said
    record = _record(flow, "e2e")
    assert record["pending_undo"] == ["dev2"]
    dev2 = next(d for d in lab.devices if d.name == "dev2")
    assert any("-m splitter_runtime.stage" in p for p in _cgroup_processes(lab, dev2))
    cli("undo", "--name", "e2e", env=flow["env"])
    assert not (Path(flow["env"]["SPLITTER_HOME"]) / "deployments" / "e2e").exists()
    again = cli("undo", "--name", "e2e", env=flow["env"])  # idempotent
    assert "nothing to undo" in again.stdout


def test_undo_after_a_deploy_interrupted_half_way_leaves_nothing(flow):
    import signal

    lab = flow["lab"]
    command = [*CLI, "deploy", str(flow["plan"]), "-i", str(lab.inventory), "--name", "cut"]
    proc = subprocess.Popen(command, env=flow["env"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        marked = False
        while not marked and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            marked = any(
                _ssh(lab, d, "ls /var/lib/splitter/deployments/ 2>/dev/null || true").strip()
                for d in lab.devices
            )
        assert marked, "deploy never got as far as writing a marker"
        proc.send_signal(signal.SIGINT)  # Ctrl-C half-way
        assert proc.wait(120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    cli("undo", "--name", "cut", env=flow["env"])
    assert not (Path(flow["env"]["SPLITTER_HOME"]) / "deployments" / "cut").exists()


def test_an_active_ufw_is_opened_for_the_stage_and_closed_again_by_undo(flow):
    """A device with ufw on (default deny): deploy opens exactly its stage's ports (the
    gateway's requests must come through), undo closes them again."""
    lab = flow["lab"]
    plan = yaml.safe_load(flow["plan"].read_text())
    device = next(d for d in lab.devices if d.name == plan["stages"][0]["device"])
    _ssh(lab, device, "ufw allow 22/tcp >/dev/null && ufw --force enable >/dev/null")
    try:
        _deploy(flow, flow["plan"], "fw")
        config = yaml.safe_load(_ssh(lab, device, "cat /etc/splitter/fw/s0-*.yaml"))
        ports = {config[key].rsplit(":", 1)[1] for key in ("bind", "health_bind")}
        opened = _ssh(lab, device, "ufw status")
        assert all(f"{port}/tcp" in opened for port in ports), opened
        assert "answered in" in cli("predict", "--name", "fw", "--random", env=flow["env"]).stdout
        assert "0 changed tasks" in _deploy(flow, flow["plan"], "fw").stdout
        cli("undo", "--name", "fw", env=flow["env"])
        closed = _ssh(lab, device, "ufw status")
        assert not any(f"{port}/tcp" in closed for port in ports), closed
        assert "22/tcp" in closed  # the user's own rule stays
    finally:
        _ssh(lab, device, "ufw --force disable >/dev/null; ufw delete allow 22/tcp >/dev/null")


def test_after_undo_every_device_is_as_it_was_before_deploy(flow):
    after = snapshot(flow["lab"])
    for name, shot in flow["before"].items():
        assert after[name] == shot, name


def test_plain_ansible_playbook_deploys_and_undoes_the_same(flow):
    env = {**flow["env"], "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    from splitter.wheelhouse import default_cache_root as cache_root

    common = ["-i", str(flow["lab"].inventory), "-e", "deployment_name=plain"]
    deploy = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), *common,
         str(ROOT / "playbooks" / "deploy.yml"), "-e", f"plan={flow['plan']}",
         "-e", f"splitter_cli={Path(sys.executable).parent / 'splitter'}",
         "-e", f"runtime_wheelhouse={cache_root()}"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout[-4000:]
    answered = cli("predict", "--name", "plain", "--random", env=flow["env"]).stdout
    assert "answered in" in answered
    undo = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), *common,
         str(ROOT / "playbooks" / "undo.yml")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert undo.returncode == 0, undo.stdout[-4000:]
    assert not (Path(flow["env"]["SPLITTER_HOME"]) / "deployments" / "plain").exists()
    after = snapshot(flow["lab"])
    for name, shot in flow["before"].items():
        assert after[name] == shot, name
