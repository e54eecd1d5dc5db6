"""The shipped program bootstraps racks of real test hosts through the real engine (issue 23).

One module-scoped set-up: the 6 test hosts of dc-local (tools/testhosts/, root), dc-local's local control plane
(kwok nodes), and a copy of the project whose stack is Pulumi.local.yaml's config as a dc-local site stack
(`hybridml:sites: [dc-local]`, what `hybridml up local` runs for that site) with `hybridml:bootstrapRacks` on and
`hybridml:rackOverrides` pointing at the test hosts. Through the Go-built CLI, in order:

1. `pulumi preview` of the empty stack: one rack resource per rack, to create;
2. `pulumi up`: every host bootstrapped over SSH, then dc-local's serving stack (it waits for the racks);
3. `pulumi preview --expect-no-changes`: an unchanged inventory is a no-op (no host is contacted);
4. one host var of one host changed in the overrides file: the preview updates exactly that rack's resource,
   and applying that step (`pulumi up --target`) re-runs that rack only (the change reaches the host; the other
   rack is not touched).

Needs root, the toolchain (scripts/toolchain.sh) and the CRDs; in CI they must be there, elsewhere the module skips.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require
from tests.datacenter.test_bootstrap_real import _missing_prerequisite

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

RACK_TYPE = "pulumi-python:dynamic:Resource"
TIMINGS: dict[str, float] = {}
PASSPHRASE = "local-only"


def _toolchain_env() -> dict[str, str]:
    from hybridml.local.toolchain import script_environment

    exported, why = script_environment()
    require(exported is not None, f"the local toolchain is not built (scripts/toolchain.sh --check: {why})")
    return {**os.environ, **(exported or {})}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    from hybridml.local.controlplane import down as clusters_down
    from hybridml.local.paths import DEFAULT_CRD_DIR
    from hybridml.local.sites import up_local
    from tools import testhosts

    reason = _missing_prerequisite()
    require(reason is None, reason or "")
    env = _toolchain_env()
    crds = Path(os.environ.get("HYBRIDML_CRD_DIR") or DEFAULT_CRD_DIR)
    require(crds.is_dir(), f"the CRD directory {crds} is missing (set HYBRIDML_CRD_DIR)")
    root = tmp_path_factory.mktemp("program-racks")
    t0 = time.monotonic()
    _, hosts = testhosts.hosts_from_spec("local", "dc-local")
    fleet = testhosts.up(hosts, datacenter="dc-local", state_dir=root / "testhosts", log=print,
                         owner_pid=os.getpid(), wait_s=600)
    try:
        clusters = up_local(REPO / "infra/environments/local.yaml", root / "clusters", crds, sites=["dc-local"])
    except BaseException:
        testhosts.down(fleet.state_dir)
        clusters_down(root / "clusters")
        raise
    TIMINGS["test hosts + dc-local control plane"] = time.monotonic() - t0
    project = root / "project"
    project.mkdir()
    pulumi_yaml = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    pulumi_yaml["runtime"]["options"]["virtualenv"] = str(Path(sys.prefix))
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(pulumi_yaml, sort_keys=False))
    shutil.copy(REPO / "__main__.py", project / "__main__.py")
    overrides = root / "overrides.yaml"
    shutil.copy(fleet.overrides_file, overrides)
    config = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())
    cfg = config["config"]
    assert cfg.get("hybridml:bootstrapRacks") is True, "the local stack bootstraps its racks (Pulumi.local.yaml)"
    cfg.update({"hybridml:spec": str(REPO / "infra/environments/local.yaml"),
                "hybridml:localKubeconfig": str(clusters.kubeconfig), "hybridml:sites": ["dc-local"],
                "hybridml:rackOverrides": {"dc-local": str(overrides)}})
    (project / "Pulumi.racks.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    bin_dir = root / "bin"
    bin_dir.mkdir()
    if shutil.which("pulumi-resource-pulumi-python", path=env["PATH"]) is None:
        # the engine starts Python dynamic providers through this plugin (the upstream CLI ships it)
        plugin = bin_dir / "pulumi-resource-pulumi-python"
        plugin.write_text(f'#!/bin/sh\nexec "{sys.executable}" -u -m pulumi.dynamic "$@"\n')
        plugin.chmod(0o755)
    (root / "backend").mkdir()
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PULUMI_BACKEND_URL=f"file://{root / 'backend'}",
               PULUMI_CONFIG_PASSPHRASE=PASSPHRASE, PULUMI_SKIP_UPDATE_CHECK="true",
               PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true")
    env.pop("PULUMI_ACCESS_TOKEN", None)

    def pulumi(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        t = time.monotonic()
        stack = [] if args[:2] == ("stack", "init") else ["--stack", "racks"]
        proc = subprocess.run(["pulumi", *args, *stack, "--non-interactive"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=900)
        TIMINGS[f"pulumi {args[0]} ({len([k for k in TIMINGS if k.startswith('pulumi ' + args[0])]) + 1})"] = \
            time.monotonic() - t
        if check:
            assert proc.returncode == 0, f"pulumi {' '.join(args)} exited {proc.returncode}:\n" \
                                         f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        return proc

    try:
        pulumi("stack", "init", "racks")
        yield pulumi, overrides, fleet
    finally:
        testhosts.down(fleet.state_dir)
        clusters_down(root / "clusters")
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        for k, v in TIMINGS.items():
            if reporter is not None:
                reporter.write_line(f"racks e2e timing: {k}: {v:.1f} s")


def steps(proc) -> dict[str, str]:
    """urn -> op of a `pulumi preview --json`."""
    return {s["urn"]: s["op"] for s in json.loads(proc.stdout).get("steps") or []}


def racks_of(plan: dict[str, str]) -> dict[str, str]:
    # urn:pulumi:<stack>::<project>::<parent types>$<type>::<name>
    return {urn.rsplit("::", 1)[1]: op for urn, op in plan.items() if urn.split("::")[2].endswith(RACK_TYPE)}


def test_preview_of_an_empty_stack_shows_one_rack_resource_per_rack(stack):
    pulumi, _, _ = stack
    plan = steps(pulumi("preview", "--json"))
    assert racks_of(plan) == {"dc-local-racks-r1": "create", "dc-local-racks-r2": "create"}
    assert sum(1 for urn in plan if "kubernetes:apps/v1:Deployment" in urn) > 3   # and the serving stack


def test_up_bootstraps_every_host_then_the_serving_stack(stack):
    pulumi, _, fleet = stack
    pulumi("up", "--yes", "--skip-preview", "--diff=false")
    racks = json.loads(pulumi("stack", "output", "racks", "--json").stdout)
    assert {r: v["changed_hosts"] for r, v in racks["dc-local"].items()} == \
        {"r1": ["r1-h01", "r1-h02", "r1-h03"], "r2": ["r2-h01", "r2-h02", "r2-h03"]}
    stamp = json.loads(fleet.ssh("r2-h03", "cat /etc/hybridml/bootstrap.json").stdout)
    assert (stamp["datacenter"], stamp["rack"]) == ("dc-local", "r2")


def test_an_unchanged_inventory_is_a_no_op(stack):
    pulumi, _, _ = stack
    pulumi("preview", "--expect-no-changes", "--diff=false")


def _hwmon(address: str) -> bool:
    return 'collector="hwmon"' in urllib.request.urlopen(f"http://{address}:9100/metrics", timeout=10).read().decode()


def test_a_changed_host_var_updates_that_rack_only(stack):
    pulumi, overrides, fleet = stack
    data = yaml.safe_load(overrides.read_text())
    data.setdefault("hosts", {}).setdefault("r2-h02", {}).setdefault("vars", {})["node_exporter_disabled_collectors"] = \
        ["hwmon"]
    overrides.write_text(yaml.safe_dump(data))
    plan = steps(pulumi("preview", "--json"))
    changed = {urn: op for urn, op in plan.items() if op != "same"}
    assert racks_of(changed) == {"dc-local-racks-r2": "update"} and len(changed) == 1, changed
    # the preview showed the whole update; applying just that step spares the test an engine pass over the rest
    pulumi("up", "--yes", "--skip-preview", "--diff=false", "--target", next(iter(changed)))
    assert not _hwmon(fleet.host("r2-h02").address) and _hwmon(fleet.host("r2-h01").address)
    racks = json.loads(pulumi("stack", "output", "racks", "--json").stdout)["dc-local"]
    # r2 ran again and changed only the host whose var changed; r1 did not run (a re-run would record no change)
    assert racks["r2"]["changed_hosts"] == ["r2-h02"]
    assert racks["r1"]["changed_hosts"] == ["r1-h01", "r1-h02", "r1-h03"]
