"""Gather device facts through the facts playbook and sort reachable from unavailable hosts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitter.ansible_run import EventHandler, run_playbook

FACTS_TASK = "Gather device facts"


@dataclass
class FactsReport:
    """Per device its facts; per unavailable device the reason, by name."""

    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """Per device: name, usable memory, effective CPUs and the raw figures behind them."""
        rows = []
        for name, facts in self.devices.items():
            rows.append(
                {
                    "name": name,
                    "usable_memory_bytes": facts["memory"]["usable_bytes"],
                    "effective_cpus": facts["cpu"]["effective"],
                    "raw": facts,
                }
            )
        return rows


def gather_facts(
    inventory: Path | str, *, on_event: EventHandler | None = None, limit: str | None = None
) -> FactsReport:
    """Run playbooks/facts.yml and return every device's ``splitter_device`` facts."""
    result = run_playbook("facts", inventory, on_event=on_event, limit=limit)
    report = FactsReport()
    for name, outcome in sorted(result.hosts.items()):
        if outcome.status != "ok":
            report.unavailable[name] = f"{outcome.status}: {outcome.message}"
            continue
        facts = outcome.results.get(FACTS_TASK, {}).get("ansible_facts", {})
        if "splitter_device" in facts:
            report.devices[name] = facts["splitter_device"]
        else:
            report.unavailable[name] = "the facts task did not run"
    return report
