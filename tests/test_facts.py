"""Device facts on a real lab over real SSH: cgroup limits and CPU quotas are reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from splitter.cli import app
from splitter.facts import gather_facts

MARGIN = 0.1


def test_facts_report_each_devices_cgroup_limits(lab):
    report = gather_facts(lab.inventory)
    assert report.unavailable == {}
    assert sorted(report.devices) == ["dev1", "dev2", "dev3"]
    for device in lab.devices:
        facts = report.devices[device.name]
        assert facts["hostname"] == device.name
        memory = facts["memory"]
        assert memory["cgroup_limit"] == device.memory_bytes
        assert 0 < memory["usable_bytes"] <= device.memory_bytes * (1 - MARGIN)
        # usage inside the group (sshd, the module) is taken off the limit
        assert memory["usable_bytes"] < memory["cgroup_limit"] * (1 - MARGIN)
        assert facts["cpu"]["quota"] == device.cpus
        assert facts["cpu"]["effective"] == min(device.cpus, facts["cpu"]["affinity"])
        assert facts["cgroup"]["version"] in (1, 2)
        assert facts["disk"]["path"] == "/opt/splitter" and facts["disk"]["free_bytes"] > 0
        assert facts["python"]["version"].startswith("3.")


def test_cli_json_matches_plain_ansible_playbook(lab, tmp_path):
    result = CliRunner().invoke(app, ["facts", "-i", str(lab.inventory), "--json"])
    assert result.exit_code == 0, result.output
    cli = {d["name"]: d for d in json.loads(result.output)["devices"]}
    output = tmp_path / "facts.json"
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(lab.inventory),
         "playbooks/facts.yml", "-e", f"facts_output={output}"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    plain = json.loads(output.read_text())
    assert sorted(plain) == sorted(cli)
    for name, facts in plain.items():
        assert facts["memory"]["cgroup_limit"] == cli[name]["raw"]["memory"]["cgroup_limit"]
        assert facts["cpu"]["effective"] == cli[name]["effective_cpus"]


def test_unreachable_and_broken_hosts_are_reported_by_name(lab, tmp_path):
    inventory = yaml.safe_load(lab.inventory.read_text())
    hosts = inventory["all"]["children"]["splitter_devices"]["hosts"]
    ssh_args = inventory["all"]["vars"]["ansible_ssh_common_args"] + " -o ConnectTimeout=2"
    ghost = lab.bridge_address.rsplit(".", 1)[0] + ".99"  # in the lab's subnet, nobody there
    hosts["ghost"] = {"ansible_host": ghost, "ansible_ssh_common_args": ssh_args}
    hosts["nopython"] = dict(hosts["dev2"], ansible_python_interpreter="/nonexistent/python3")
    broken = tmp_path / "inventory.yml"
    broken.write_text(yaml.safe_dump(inventory))
    report = gather_facts(broken)
    assert sorted(report.devices) == ["dev1", "dev2", "dev3"]  # the others finish
    assert report.unavailable["ghost"].startswith("unreachable")
    assert report.unavailable["nopython"].startswith("failed")
    assert "python" in report.unavailable["nopython"].lower()
