"""A deployment on the controller: its directory, its record, and the files deploy ships.

``prepare`` turns a plan into what the deploy playbook needs and nothing more: one re-cut,
converted model per stage (cached by manifest, range and backend, so a second deploy ships
byte-identical files and Ansible reports no change), the deployment's CURVE keys (made once,
kept while the deployment lives) and ``deployment.json``, the record that names every stage,
its device and files. Undo reads the same record; it never guesses.

Layout (``SPLITTER_HOME``, default ``~/.local/share/splitter``)::

    deployments/<name>/deployment.json   the record (docs/formats.md)
    deployments/<name>/models/           stage models + a sidecar with their tensor specs
    deployments/<name>/keys/             CURVE certificates (secret halves mode 600)
    deployments/<name>/gateway.yaml      the gateway's config (written by the playbook)
    deployments/<name>/run/, logs/       the gateway's supervisor state and log
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from splitter.checksums import sha256_of
from splitter.errors import SplitterError

SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
ROLE_KEYS = ("gateway", "client", "watcher")


def splitter_home() -> Path:
    return Path(os.environ.get("SPLITTER_HOME") or Path.home() / ".local/share/splitter")


def deployments_root() -> Path:
    return splitter_home() / "deployments"


def deployment_dir(name: str) -> Path:
    return deployments_root() / check_name(name)


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise SplitterError(
            f"deployment name '{name}' is not usable in paths and service names",
            "use lowercase letters, digits, '-' and '_' (at most 40, starting with a letter "
            "or digit)",
        )
    return name


def default_name(plan: dict[str, Any]) -> str:
    """The model's name, made safe: one deployment per model unless --name says otherwise."""
    source = str(plan.get("model") or Path(plan["slices"]["path"]).parent.name or "splitter")
    slug = re.sub(r"[^a-z0-9_-]+", "-", source.lower()).strip("-_")[:40]
    return slug or "splitter"


def stage_name(index: int, device: str) -> str:
    return f"s{index}-" + re.sub(r"[^A-Za-z0-9_-]", "_", device)


# -- the record --------------------------------------------------------------------------------
def record_path(name: str) -> Path:
    return deployment_dir(name) / "deployment.json"


def read_record(name: str) -> dict[str, Any]:
    path = record_path(name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        known = list_deployments()
        raise SplitterError(
            f"there is no deployment named '{name}'",
            f"deployments here: {', '.join(known)}" if known else "run `splitter deploy` first",
        ) from None
    except ValueError as error:
        raise SplitterError(
            f"{path} is not valid JSON ({error})",
            f"restore it, or remove {path.parent} after cleaning the devices by hand",
        ) from None
    if data.get("kind") != "splitter.deployment" or data.get("schema_version") != SCHEMA_VERSION:
        raise SplitterError(
            f"{path} is not a splitter deployment record (schema {SCHEMA_VERSION})",
            "it was written by another version of splitter; undo with that version",
        )
    return data


def write_record(record: dict[str, Any]) -> Path:
    path = record_path(record["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    record["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    temporary = path.with_suffix(".json.part")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)
    return path


def list_deployments() -> list[str]:
    root = deployments_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "deployment.json").is_file())


def resolve_name(name: str | None) -> str:
    """The named deployment, else the only one, else the most recently updated one."""
    if name:
        return check_name(name)
    known = list_deployments()
    if not known:
        raise SplitterError("there is no deployment on this controller", "run `splitter deploy`")
    return max(known, key=lambda n: record_path(n).stat().st_mtime)


# -- prepare -----------------------------------------------------------------------------------
def prepare(
    plan_path: Path | str,
    inventory: Path | str,
    name: str | None = None,
    *,
    progress: Any = None,
) -> dict[str, Any]:
    """Build the stage models and keys for ``plan_path`` and write the deployment record."""
    from splitter.manifest import read_manifest
    from splitter.planning.plan_file import load_plan
    from splitter.run_local import read_plan

    plan_path = Path(plan_path).resolve()
    plan = load_plan(plan_path)
    slice_dir, batch_size, _ = read_plan(plan_path)
    manifest = read_manifest(slice_dir)
    model_name = manifest.data.get("source", {}).get("name")
    name = check_name(name or default_name({**plan, "model": model_name}))
    directory = deployment_dir(name)
    previous = read_record(name) if record_path(name).exists() else {}
    models = directory / "models"
    models.mkdir(parents=True, exist_ok=True)
    stages = []
    for entry in plan["stages"]:
        index, device = int(entry["index"]), str(entry["device"])
        model = _stage_model(
            manifest, models, int(entry["start"]), int(entry["stop"]), entry["backend"]
        )
        if progress is not None:
            progress(index, len(plan["stages"]))
        stages.append(
            {
                "index": index,
                "name": stage_name(index, device),
                "device": device,
                "address": entry["address"],
                "start": entry["start"],
                "stop": entry["stop"],
                "backend": model["backend"],
                "batch_size": batch_size,
                "model": {"file": model["file"], "sha256": model["sha256"]},
                "inputs": model["inputs"],
                "outputs": model["outputs"],
                "memory_needed_bytes": int(entry.get("memory", {}).get("needed_bytes", 0)),
                "predicted_compute_ms": entry.get("compute_ms"),
            }
        )
    _remove_unused_models(models, {s["model"]["file"] for s in stages})
    _make_keys(directory / "keys", [s["name"] for s in stages])
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": "splitter.deployment",
        "name": name,
        "status": "prepared",
        "created_at": previous.get("created_at") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "directory": str(directory),
        "inventory": str(Path(inventory).resolve()),
        "plan": {"path": str(plan_path), "sha256": sha256_of(plan_path)},
        "objective": plan.get("objective"),
        "batch_size": batch_size,
        "predicted": plan.get("predicted", {}),
        "controller": plan.get("controller", {"name": "controller", "address": "127.0.0.1"}),
        "inputs": stages[0]["inputs"],
        "outputs": stages[-1]["outputs"],
        "stages": stages,
        # devices that held this deployment's stages before (a new plan must clean them)
        "devices": sorted({s["device"] for s in stages} | set(previous.get("devices", []))),
        "pending_undo": previous.get("pending_undo", []),
    }
    write_record(record)
    return record


def _stage_model(
    manifest: Any, models: Path, start: int, stop: int, backend: str
) -> dict[str, Any]:
    """One stage's model file, built once per (slice set, range, backend) and then reused."""
    from splitter.run_local import build_stage_files

    key = f"{manifest.sha256()[:12]}-{start}-{stop}-{backend}"
    sidecar = models / f"{key}.json"
    if sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        path = models / meta["file"]
        if path.is_file() and sha256_of(path) == meta["sha256"]:
            return meta
    building = models / f"{key}.part"
    shutil.rmtree(building, ignore_errors=True)
    (spec,) = build_stage_files(manifest.directory, [(start, stop)], building,
                                backends=[backend], names=[key])  # fmt: skip
    target = models / Path(spec.model_file).name
    Path(spec.model_file).replace(target)
    shutil.rmtree(building, ignore_errors=True)
    meta = {
        "file": target.name,
        "sha256": sha256_of(target),
        "backend": spec.backend,
        "inputs": [t.to_dict() for t in spec.inputs],
        "outputs": [t.to_dict() for t in spec.outputs],
    }
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _remove_unused_models(models: Path, keep: set[str]) -> None:
    """Models (and sidecars) of an older plan of this deployment go; the current ones stay."""
    for path in models.iterdir():
        if path.suffix == ".json":
            if json.loads(path.read_text()).get("file") not in keep:
                path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        elif path.name not in keep:
            path.unlink()


def _make_keys(directory: Path, stage_names: list[str]) -> None:
    """Certificates for the gateway, the client, the watcher and each stage; made once."""
    from splitter_runtime import keys

    missing = [
        n for n in (*ROLE_KEYS, *stage_names) if not (directory / f"{n}.key_secret").exists()
    ]
    if missing:
        keys.generate(directory, missing)
    for path in directory.glob("*.key_secret"):
        path.chmod(0o600)
