"""`pulumi up` over racks of real test hosts: new racks are bootstrapped, unchanged ones skipped, changed ones redone.

Needs root (test hosts) and the Pulumi CLI of scripts/toolchain.sh (local file backend, no network).
In CI both must be there; elsewhere the module skips with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require
from tests.datacenter.test_bootstrap_real import _missing_prerequisite

pytestmark = [pytest.mark.root, pytest.mark.slow]

PROGRAM = '''
import os
import pulumi
from infra.loader import load_environment
from datacenter.files import load_overrides
from datacenter.inventory import build_inventory
from datacenter.pulumi_racks import DatacenterBootstrap, DatacenterBootstrapArgs

inventory = build_inventory(load_environment("local"), "dc-local", load_overrides(os.environ["HYBRIDML_OVERRIDES"]))
dc = DatacenterBootstrap("dc-local", DatacenterBootstrapArgs(inventory=inventory))
pulumi.export("changed_hosts", {rack: res.changed_hosts for rack, res in dc.racks.items()})
'''


def _pulumi_cli() -> str | None:
    cache = Path(os.environ.get("HYBRIDML_CACHE") or Path.home() / ".cache" / "hybridml")
    candidates = [os.environ.get("HYBRIDML_TOOLCHAIN_BIN", ""), str(cache / "bin" / "current")]
    for directory in candidates:
        if directory and (Path(directory) / "pulumi").exists() and (Path(directory) / "pulumi-language-python").exists():
            return str(Path(directory) / "pulumi")
    return shutil.which("pulumi")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    reason = _missing_prerequisite()
    require(reason is None, reason or "")
    cli = _pulumi_cli()
    require(cli is not None, "the Pulumi CLI is not built (scripts/toolchain.sh pulumi)")
    from tools import testhosts

    root = tmp_path_factory.mktemp("pulumi-racks")
    _, hosts = testhosts.hosts_from_spec("local", "dc-local")
    fleet = testhosts.up(hosts, datacenter="dc-local", state_dir=root / "testhosts", log=print,
                         owner_pid=os.getpid(), wait_s=600)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    # the engine starts Python dynamic providers through this plugin executable
    provider = bin_dir / "pulumi-resource-pulumi-python"
    provider.write_text(f'#!/bin/sh\nexec "{sys.executable}" -u -m pulumi.dynamic "$@"\n')
    provider.chmod(0o755)
    work = root / "project"
    work.mkdir()
    (work / "Pulumi.yaml").write_text(textwrap.dedent(f"""\
        name: racks
        runtime:
          name: python
          options:
            virtualenv: {Path(sys.executable).parent.parent}
        """))
    (work / "__main__.py").write_text(PROGRAM)
    overrides = root / "overrides.yaml"
    shutil.copy(fleet.overrides_file, overrides)
    env = dict(os.environ, PATH=f"{bin_dir}:{Path(cli).parent}:{Path(sys.executable).parent}:{os.environ['PATH']}",
               PULUMI_HOME=str(root / "pulumi-home"), PULUMI_SKIP_UPDATE_CHECK="true",
               PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true", PULUMI_CONFIG_PASSPHRASE="",
               PULUMI_BACKEND_URL=f"file://{root / 'state'}", HYBRIDML_OVERRIDES=str(overrides),
               PYTHONPATH=str(REPO))
    (root / "state").mkdir()

    def pulumi(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([cli, *args, "--non-interactive"], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"pulumi {' '.join(args)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        return proc

    pulumi("stack", "init", "test")
    # (an empty stack config trips the toolchain's Python language host: give it one key)
    pulumi("config", "set", "racks:note", "datacenter bootstrap test")
    yield pulumi, overrides, fleet
    testhosts.down(fleet.state_dir)


def summary(proc) -> dict:
    events = {}
    for word in ("created", "updated", "unchanged"):
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[-1] == word and parts[-2].isdigit():
                events[word] = int(parts[-2])
    return events


def test_pulumi_up_bootstraps_new_racks_skips_unchanged_and_redoes_changed(project):
    pulumi, overrides, fleet = project
    first = pulumi("up", "--yes", "--skip-preview")
    assert summary(first) == {"created": 4}, first.stdout[-3000:]  # stack, component and the two racks
    changed = json.loads(pulumi("stack", "output", "changed_hosts", "--json").stdout)
    assert changed == {"r1": ["r1-h01", "r1-h02", "r1-h03"], "r2": ["r2-h01", "r2-h02", "r2-h03"]}

    again = pulumi("up", "--yes", "--skip-preview")
    assert summary(again) == {"unchanged": 4}, again.stdout[-3000:]  # no rack was bootstrapped again

    data = yaml.safe_load(overrides.read_text())
    data["racks"] = {"r2": {"vars": {"node_exporter_disabled_collectors": ["hwmon"]}}}
    overrides.write_text(yaml.safe_dump(data))
    preview = pulumi("preview", "--diff")
    assert "inventory_hash" in preview.stdout and "[secret]" in preview.stdout
    third = pulumi("up", "--yes", "--skip-preview")
    assert summary(third) == {"updated": 1, "unchanged": 3}, third.stdout[-3000:]
    # the change reached rack r2 only
    def hwmon(address: str) -> bool:
        return 'collector="hwmon"' in urllib.request.urlopen(f"http://{address}:9100/metrics", timeout=10).read().decode()

    assert not hwmon("10.77.2.11") and hwmon("10.77.1.11")
