"""Shared fixtures: real models saved once per session, quiet TensorFlow."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory):
    """Save example models lazily: ``model_files('resnet50')`` → path of its .keras file."""
    from splitter.examples import write_example_model

    root = tmp_path_factory.mktemp("models")
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = write_example_model(root / f"{kind}.keras", kind)
        return cache[kind]

    return get


def skip_unless_ci(reason: str) -> None:
    """Skip where this machine cannot run the test (a developer's laptop without root), but
    fail in CI, which must provide it: a skipped lab test in CI would hide a broken lab."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must be able to run this test, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def environment_missing():
    """``environment_missing(reason)``: skip here, fail in CI (see :func:`skip_unless_ci`)."""
    return skip_unless_ci


def _can_build_lab() -> str | None:
    """Why a lab cannot be built here, or None when it can."""
    import shutil

    if os.geteuid() != 0:
        return "the lab needs root"
    if not Path("/usr/sbin/sshd").exists():
        return "openssh-server is not installed"
    if shutil.which("ip") is None:
        return "iproute2 is not installed"
    return None


@pytest.fixture()
def require_lab_host() -> None:
    """Skip (saying why) where a lab cannot be built: not root, no sshd; fail in CI."""
    reason = _can_build_lab()
    if reason:
        skip_unless_ci(reason)


@pytest.fixture(scope="module")
def lab():
    """A fresh 3-device lab per test module (256M/0.5 CPU, 512M/1 CPU, 1G/1 CPU), always torn
    down: modules install and remove things on the devices, and must not see each other's."""
    reason = _can_build_lab()
    if reason:
        skip_unless_ci(reason)
    from splitter.lab import LabSpec, lab_down, lab_up

    spec = LabSpec(
        # Unique per test process: two test runs at once must not share (and tear down) a lab.
        name=f"t{os.getpid() % 100000}",
        devices=3,
        memory=(256 << 20, 512 << 20, 1 << 30),
        cpus=(0.5, 1.0, 1.0),
        subnet_index=20 + os.getpid() % 200,
    )
    built = lab_up(spec)
    try:
        yield built
    finally:
        lab_down(spec.name)
