"""The collection's static checks: ansible-lint (production profile) and module docs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_module_docs_render_and_match_argument_spec(module):
    done = subprocess.run(
        [str(BIN / "ansible-doc"), "--json", f"splitter.pipeline.{module}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": f"{BIN}:/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = next(iter(yaml.safe_load(done.stdout).values()))
    documented = set(doc["doc"]["options"])
    source = (ROOT / "plugins" / "modules" / f"{module}.py").read_text()
    for option in documented:
        assert f'"{option}"' in source, f"{option} documented but not in argument_spec"
    assert doc["examples"].strip() and doc["return"]


def test_ansible_lint_production_profile():
    done = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "plugins", "roles", "playbooks", "galaxy.yml",
         "meta"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in done.stderr + done.stdout
