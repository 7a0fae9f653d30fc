"""Wheels a device needs for the runtime, fetched on the controller so devices install offline.

Devices may have no route to the internet, so the controller (which reaches PyPI) builds the
runtime wheel from ``runtime/`` and downloads its dependencies for the *device's* Python version
and architecture; the ``runtime`` role ships the directory and installs with ``--no-index``.

One directory per (Python, architecture, backend) under the cache root
(``~/.cache/splitter/wheelhouse/<py>-<arch>-<backend>/``): the wheels, ``wheelhouse.tar``
(the same wheels as one file to ship) and ``wheelhouse.json`` (what it was made for). It is
reused while the runtime's sources are unchanged: a change to ``runtime/`` rebuilds the
runtime wheel; a change to ``runtime/pyproject.toml`` (its dependencies) downloads the
dependencies again. Usable as a command too::

    python -m splitter.wheelhouse --python 3.11 --arch x86_64 --backend litert
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from splitter.checksums import sha256_of
from splitter.errors import SplitterError

SCHEMA_VERSION = 2
# Backend name (as in the plan and the role's runtime_backend) -> extra of splitter-runtime.
BACKEND_EXTRAS = {"litert": "litert", "tensorflow": "tensorflow"}
# Oldest glibc the downloaded wheels may need. 2.28 = Debian 10, Ubuntu 20.04, RHEL 8 and
# newer; ai-edge-litert and numpy 2.3+ publish manylinux_2_27/2_28 wheels only.
DEFAULT_GLIBC = "2.28"
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
# runtime/pyproject.toml asks for `wheel` at build time; wheel 0.48 with setuptools >= 81
# fails in bdist_wheel ('NoneType' object has no attribute 'has_pure_modules').
BUILD_CONSTRAINTS = "setuptools<81\n"
ARCHIVE = "wheelhouse.tar"
_SKIP = {"__pycache__", "build", "dist", ".pytest_cache", ".ruff_cache"}
_PIP_TIMEOUT_S = 900


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitter" / "wheelhouse"


def runtime_source() -> Path:
    """The ``runtime/`` distribution next to this package (a source checkout)."""
    path = Path(__file__).resolve().parent.parent / "runtime"
    if not (path / "pyproject.toml").is_file():
        raise SplitterError(
            f"the runtime sources were not found at {path}",
            "run from a splitter source checkout, or pass a prepared wheelhouse directory",
        )
    return path


def wheelhouse_key(python_version: str, architecture: str, backend: str, glibc: str) -> str:
    key = f"{python_version}-{architecture}-{backend}"
    return key if glibc == DEFAULT_GLIBC else f"{key}-glibc{glibc}"


def platform_tags(architecture: str, glibc: str = DEFAULT_GLIBC) -> list[str]:
    """pip ``--platform`` values for a glibc Linux device: manylinux2014 up to ``glibc``."""
    newest = int(glibc.split(".")[1])
    tags = [f"manylinux2014_{architecture}"]
    tags += [f"manylinux_2_{minor}_{architecture}" for minor in range(17, newest + 1)]
    return tags


def prepare_wheelhouse(
    python_version: str,
    architecture: str,
    backend: str,
    cache_dir: Path | str | None = None,
    *,
    glibc: str = DEFAULT_GLIBC,
    runtime_dir: Path | str | None = None,
) -> Path:
    """The directory of wheels a device with this Python/arch needs for ``backend``.

    ``python_version`` is ``3.11`` or ``3.11.2``; ``architecture`` is ``platform.machine()``
    of the device; ``cache_dir`` is the cache root (default ``~/.cache/splitter/wheelhouse``).
    Returns ``<cache_dir>/<py>-<arch>-<backend>``, built or reused.
    """
    python_version = _python_version(python_version)
    arch = _architecture(architecture)
    extra = _extra(backend)
    glibc = _glibc(glibc)
    source = Path(runtime_dir) if runtime_dir else runtime_source()
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = wheelhouse_key(python_version, arch, backend, glibc)
    target = root / key
    source_sha, requirements_sha = _source_digests(source)
    with _locked(root / f".{key}.lock"):
        old = _read_manifest(target)
        if old and old.get("source_sha256") == source_sha and _complete(target, old):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            runtime_wheel = _build_runtime_wheel(source, staging)
            reuse = old is not None and old.get("requirements_sha256") == requirements_sha
            if reuse and _complete(target, old, archive=False):
                for name in old["wheels"]:
                    if name != old["runtime_wheel"]:
                        shutil.copy2(target / name, staging / name)
            else:
                _download(staging, python_version, arch, glibc, extra)
            wheels = sorted(p.name for p in staging.glob("*.whl"))
            pip_wheels = [name for name in wheels if name.startswith("pip-")]
            archive = _archive(staging, wheels)
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "python_version": python_version,
                "architecture": arch,
                "backend": backend,
                "extra": extra,
                "glibc": glibc,
                "platforms": platform_tags(arch, glibc),
                "requirement": f"splitter-runtime[{extra}]",
                "runtime_wheel": runtime_wheel.name,
                # The device runs this pip (python <wheel>/pip ...), not the venv's: Debian's and
                # Ubuntu's ensurepip give pip 20-23, and --report needs 22.2.
                "pip_wheel": pip_wheels[-1] if pip_wheels else None,
                "runtime_wheel_sha256": sha256_of(runtime_wheel),
                "source_sha256": source_sha,
                "requirements_sha256": requirements_sha,
                "wheels": wheels,
                "archive": archive.name,
                "archive_sha256": sha256_of(archive),
            }
            (staging / "wheelhouse.json").write_text(json.dumps(manifest, indent=2) + "\n")
            staging.chmod(0o755)
            _replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def _python_version(text: str) -> str:
    match = re.match(r"^(3)\.(\d+)(?:\.\d+.*)?$", str(text).strip())
    if not match:
        raise SplitterError(
            f"python version '{text}' is not a CPython 3 version", "give e.g. 3.11 or 3.11.2"
        )
    return f"{match.group(1)}.{match.group(2)}"


def _architecture(text: str) -> str:
    arch = ARCHITECTURES.get(str(text).strip().lower())
    if arch is None:
        raise SplitterError(
            f"architecture '{text}' has no manylinux wheels for the runtime",
            f"use a device with one of {', '.join(sorted(set(ARCHITECTURES.values())))}, "
            "or build a wheelhouse for it by hand and pass its directory",
        )
    return arch


def _extra(backend: str) -> str:
    if backend not in BACKEND_EXTRAS:
        raise SplitterError(
            f"backend '{backend}' is not known", f"use one of {', '.join(BACKEND_EXTRAS)}"
        )
    return BACKEND_EXTRAS[backend]


def _glibc(text: str) -> str:
    if not re.match(r"^2\.\d+$", str(text)) or int(str(text).split(".")[1]) < 17:
        raise SplitterError(f"glibc '{text}' is not a version >= 2.17", "give e.g. 2.28")
    return str(text)


def _source_files(source: Path) -> Iterator[Path]:
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part in _SKIP or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.suffix not in (".pyc", ".pyo"):
            yield path


def _source_digests(source: Path) -> tuple[str, str]:
    """(hash of every runtime source file, hash of pyproject.toml alone)."""
    digest = hashlib.sha256()
    for path in _source_files(source):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest(), sha256_of(source / "pyproject.toml")


def _read_manifest(directory: Path) -> dict | None:
    try:
        data = json.loads((directory / "wheelhouse.json").read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("schema_version") == SCHEMA_VERSION else None


def _complete(directory: Path, manifest: dict, *, archive: bool = True) -> bool:
    names = list(manifest.get("wheels", []))
    if archive:
        names.append(manifest.get("archive", ARCHIVE))
    return all((directory / name).is_file() for name in names)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pip(*args: str, what: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SplitterError(
            f"{what} took more than {_PIP_TIMEOUT_S} s",
            "check this machine's connection to PyPI (or its pip index), then run again",
        ) from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        detail = " ".join(errors or done.stderr.strip().splitlines()[-3:])[:600]
        raise SplitterError(
            f"{what} failed: {detail}",
            "check that this machine reaches PyPI (or its pip index) and that the packages "
            "publish wheels for the device's Python and architecture",
        )


def _build_runtime_wheel(source: Path, out: Path) -> Path:
    """``pip wheel --no-deps`` from a copy of the sources, so runtime/ gets no build files."""
    with tempfile.TemporaryDirectory(prefix="splitter-runtime-build-") as tmp:
        copy = Path(tmp) / "runtime"
        copy.mkdir()
        for path in _source_files(source):
            dest = copy / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        constraints = Path(tmp) / "build-constraints.txt"
        constraints.write_text(BUILD_CONSTRAINTS)
        _pip(
            "wheel", "--no-deps", "--quiet", "--build-constraint", str(constraints),
            "--wheel-dir", str(out), str(copy),
            what=f"building the runtime wheel from {source}",
        )  # fmt: skip
    wheels = list(out.glob("splitter_runtime-*.whl"))
    if len(wheels) != 1:
        raise SplitterError(
            f"building {source} gave {len(wheels)} runtime wheels",
            "check runtime/pyproject.toml (the distribution must be named splitter-runtime)",
        )
    return wheels[0]


def _download(dest: Path, python_version: str, arch: str, glibc: str, extra: str) -> None:
    platforms = [arg for tag in platform_tags(arch, glibc) for arg in ("--platform", tag)]
    _pip(
        "download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
        "--python-version", python_version, *platforms,
        "--find-links", str(dest), "--dest", str(dest), f"splitter-runtime[{extra}]", "pip",
        what=f"downloading the runtime's dependencies for Python {python_version} on {arch}",
    )  # fmt: skip


def _archive(directory: Path, wheels: list[str]) -> Path:
    """One uncompressed, reproducible tar of the wheels: shipped as one file, not one per wheel
    (Ansible's per-file copy costs seconds per wheel on a small device)."""
    path = directory / ARCHIVE

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
        return info

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in wheels:
            tar.add(directory / name, arcname=name, filter=clean)
    return path


def _replace(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m splitter.wheelhouse",
        description="Prepare (or reuse) the wheels a device needs; print their directory.",
    )
    parser.add_argument("--python", required=True, help="device Python version, e.g. 3.11")
    parser.add_argument("--arch", required=True, help="device architecture, e.g. x86_64")
    parser.add_argument("--backend", default="litert", choices=sorted(BACKEND_EXTRAS))
    parser.add_argument("--glibc", default=DEFAULT_GLIBC, help="oldest glibc on the devices")
    parser.add_argument("--cache-dir", default=None, help="cache root (default ~/.cache/...)")
    args = parser.parse_args(argv)
    try:
        path = prepare_wheelhouse(
            args.python, args.arch, args.backend, args.cache_dir, glibc=args.glibc
        )
    except SplitterError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return error.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
