"""ansible-lint, production profile, over datacenter/: 0 violations (no rule is skipped: see .ansible-lint)."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.conftest import REPO, require


@pytest.mark.slow
def test_ansible_lint_production_profile_has_no_violations():
    config = yaml.safe_load((REPO / "datacenter" / ".ansible-lint").read_text())
    assert config["profile"] == "production"
    assert not config.get("skip_list") and not config.get("warn_list"), "skips must be justified in .ansible-lint"
    setup = subprocess.run([str(REPO / "scripts" / "ansible_lint.sh"), "--setup"], capture_output=True, text=True,
                           timeout=900)
    require(setup.returncode == 0, f"cannot install ansible-lint into .venv-lint: {setup.stderr[-2000:]}")
    proc = subprocess.run([str(REPO / "scripts" / "ansible_lint.sh")], capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "0 failure(s), 0 warning(s)" in output and "Profile 'production' was required, and it passed" in output, output
