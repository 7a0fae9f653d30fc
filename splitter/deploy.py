"""Deploy and undo through the collection's playbooks, and talk to a deployed pipeline.

``deploy`` = prepare (splitter.deployment) + the wheels each device needs + playbooks/deploy.yml;
``undo`` = playbooks/undo.yml on the devices the record names. The playbooks do the device work
(and run the same by hand or from AWX); this module keeps the controller's record true:
status, which devices are clean, which still need undo.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from splitter.ansible_run import EventHandler, PlaybookResult, check_inventory, run_playbook
from splitter.deployment import (
    check_name,
    deployment_dir,
    prepare,
    read_record,
    record_path,
    resolve_name,
    write_record,
)
from splitter.errors import SplitterError


@dataclass
class DeployReport:
    record: dict[str, Any]
    changed: dict[str, int]  # per host (localhost = the controller)
    seconds: float
    failed: dict[str, str] = field(default_factory=dict)


def _stats_collector(changed: dict[str, int], on_event: EventHandler | None) -> EventHandler:
    def handle(event: dict[str, Any]) -> None:
        if event.get("event") == "playbook_on_stats":
            data = event["event_data"]
            changed.update(
                {host: data.get("changed", {}).get(host, 0) for host in data.get("processed", {})}
            )
        if on_event is not None:
            on_event(event)

    return handle


def _failures(result: PlaybookResult) -> dict[str, str]:
    return {
        name: f"{outcome.status} in '{outcome.task}': {outcome.message}"
        for name, outcome in result.failed_hosts.items()
    }


def _wheelhouse_root(inventory: Path, backends: dict[str, str]) -> Path:
    """Make sure the wheels of every device's (python, arch, backend) are in the cache."""
    from splitter.facts import gather_facts
    from splitter.wheelhouse import prepare_wheelhouse

    facts = gather_facts(inventory)
    missing = {d: r for d, r in facts.unavailable.items() if d in backends}
    if missing:
        raise SplitterError(
            "cannot reach " + "; ".join(f"{name}: {reason}" for name, reason in missing.items()),
            "check those devices (`splitter facts -i INVENTORY`), or re-plan without them "
            "(`splitter configure --exclude ...`)",
        )
    root = None
    for name, backend in backends.items():
        device = facts.devices[name]
        path = prepare_wheelhouse(device["python"]["version"], device["architecture"], backend)
        root = Path(path).parent
    assert root is not None
    return root


def deploy(
    plan_path: Path | str,
    inventory: Path | str,
    name: str | None = None,
    *,
    on_event: EventHandler | None = None,
    on_prepare: Any = None,
) -> DeployReport:
    """Prepare the deployment, run playbooks/deploy.yml, and record the outcome."""
    began = time.perf_counter()
    inventory = check_inventory(inventory)
    record = prepare(plan_path, inventory, name, progress=on_prepare)
    _check_devices_in_inventory(record, inventory)
    wheels = _wheelhouse_root(inventory, {s["device"]: s["backend"] for s in record["stages"]})
    record["status"] = "deploying"
    write_record(record)
    changed: dict[str, int] = {}
    result = run_playbook(
        "deploy",
        inventory,
        {
            "deployment_name": record["name"],
            "deployment_dir": record["directory"],
            "deploy_prepared": True,
            "runtime_wheelhouse": str(wheels),
        },
        on_event=_stats_collector(changed, on_event),
        limit=",".join([*record["devices"], "localhost"]),
    )
    failed = _failures(result)
    if result.status != "successful" and not failed:
        failed["playbook"] = f"ansible-playbook ended {result.status} (rc {result.rc})"
    record = read_record(record["name"])
    if failed:
        record["status"] = "failed"
    else:
        record["status"] = "deployed"
        record["devices"] = sorted({s["device"] for s in record["stages"]})
        record["gateway"] = gateway_endpoint(record)
    write_record(record)
    return DeployReport(record, changed, time.perf_counter() - began, failed)


def _check_devices_in_inventory(record: dict[str, Any], inventory: Path) -> None:
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    hosts = {h.name for h in InventoryManager(DataLoader(), [str(inventory)]).get_hosts()}
    unknown = sorted({s["device"] for s in record["stages"]} - hosts)
    if unknown:
        raise SplitterError(
            f"the plan puts stages on {', '.join(unknown)}, which inventory {inventory} "
            f"does not have (it has {', '.join(sorted(hosts)) or 'no hosts'})",
            "deploy with the inventory the profile was measured on, or re-run configure",
        )


def gateway_endpoint(record: dict[str, Any]) -> dict[str, str]:
    """Where clients reach the deployment's gateway, from the config the playbook wrote."""
    path = Path(record["directory"]) / "gateway.yaml"
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SplitterError(
            f"deployment '{record['name']}' has no gateway config ({path})",
            "its deploy did not finish: run `splitter deploy` again, or `splitter undo`",
        ) from None
    keys = Path(record["directory"]) / "keys"
    return {
        "address": config["client_bind"],
        "server_key": str(keys / "gateway.key"),
        "secret_key": str(keys / "client.key_secret"),
    }


def client(name: str | None = None, timeout_s: float = 30.0) -> tuple[dict[str, Any], Any]:
    """The record of a deployment (named, only or latest) and a Client to its gateway.

    It sends a request again when the pipeline failed it retryably (a stage crashed and its
    supervisor restarts it), within the same timeout: a crash costs time, not the request."""
    from splitter_runtime.client import Client

    record = read_record(resolve_name(name))
    endpoint = record.get("gateway") or gateway_endpoint(record)
    c = Client(
        endpoint["address"],
        server_key=endpoint["server_key"],
        secret_key=endpoint["secret_key"],
        timeout_s=timeout_s,
        resubmit=True,
    )
    return record, c


@dataclass
class UndoReport:
    name: str
    cleaned: list[str]
    unreachable: dict[str, str]
    record_removed: bool
    seconds: float


def undo(
    name: str | None = None,
    inventory: Path | str | None = None,
    *,
    on_event: EventHandler | None = None,
) -> UndoReport:
    """Run playbooks/undo.yml on the deployment's devices; keep the record for any left."""
    began = time.perf_counter()
    if name and not record_path(check_name(name)).exists():
        if inventory is None:  # already undone (or never deployed here): nothing to do
            return UndoReport(name, [], {}, True, time.perf_counter() - began)
        # no record (lost, or another controller's): clean whatever markers the devices hold
        record = {"directory": str(deployment_dir(name)), "devices": []}
    else:
        name = resolve_name(name)
        record = read_record(name)
    inventory = check_inventory(inventory or record["inventory"])
    devices = sorted(set(record.get("devices", [])) | set(record.get("pending_undo", [])))
    result = run_playbook(
        "undo",
        inventory,
        {"deployment_name": name, "deployment_dir": record["directory"]},
        on_event=on_event,
        limit=",".join([*devices, "localhost"]) if devices else None,
    )
    failed = _failures(result)
    if "localhost" in failed:
        raise SplitterError(
            f"undo failed on the controller: {failed['localhost']}",
            f"fix that and run `splitter undo --name {name}` again",
        )
    removed = not record_path(name).exists()
    if not removed:
        record = read_record(name)
        record["status"] = "undo-incomplete"
        record["pending_undo"] = sorted(failed)
        record["devices"] = sorted(failed)
        write_record(record)
    cleaned = [d for d in devices if d not in failed]
    return UndoReport(name, cleaned, failed, removed, time.perf_counter() - began)


__all__ = ["DeployReport", "UndoReport", "client", "deploy", "deployment_dir", "undo"]
