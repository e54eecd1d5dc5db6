"""`hybridml preflight local --check datacenters` against a control plane of the local stack's datacenter (dc-local,
brought up by the local stack's `up` with dc-local's nodes and the StorageClass `hybridml local up` makes) that holds
exactly the CRDs the plan's objects there need (from ../shared/crds): with what the platform team adds by hand (the
public ClusterIssuer) every prerequisite is found and it exits 0; with one CRD deleted it exits 1 naming the kind,
its operator and the fix. Only the needed CRDs, not all 35 `hybridml local up` installs: KServe's (unused at dc-local)
take most of a cold start. Needs the Go-built toolchain; outside CI it skips when missing."""
from __future__ import annotations

import time

import pytest
import yaml
from typer.testing import CliRunner

from hybridml.local import api_client, down, up
from hybridml.local.fromspec import cluster_name
from hybridml.local.sites import ensure_storage_class, plan_clusters
from hybridml.local.toolchain import find_binaries, kwok_stage_files
from infra.errors import ToolchainMissing
from tests.conftest import require
from tests.e2e.kube import wait_for
from tests.workloads.schemas import CRD_DIR

pytestmark = pytest.mark.e2e
SITE = "dc-local"
FLINK_CRD = "flinkdeployments.flink.apache.org"


@pytest.fixture(scope="module")
def dc_local(tmp_path_factory):
    try:
        find_binaries()
        kwok_stage_files()
    except ToolchainMissing as exc:
        require(False, f"the local toolchain is missing ({exc})")
    require(CRD_DIR.is_dir(), f"CRD directory {CRD_DIR} missing")
    from hybridml.ops.check import program_views
    from hybridml.ops.prerequisites import requirements

    needed = {(q.group, q.kind) for q in requirements(SITE, program_views("local", mode="local")[0], simulated=True)
              if q.what == "crd"}
    by_file = _crd_files()
    files = [f for f, kinds in by_file.items() if kinds & needed]
    assert needed <= set().union(*(by_file[f] for f in files)), needed
    state = tmp_path_factory.mktemp("preflight-dc")
    t0 = time.monotonic()
    try:
        _, clusters = plan_clusters("local", [SITE])
        up(clusters, state, CRD_DIR, crd_patterns=files)
        api = api_client(cluster_name(SITE), state)
        ensure_storage_class(api)
        print(f"dc-local up with {len(files)} CRDs in {time.monotonic() - t0:.1f}s")
        yield state / "kubeconfig", api
        api.close()
    finally:
        down(state)


def _crd_files() -> dict[str, set[tuple[str, str]]]:
    """CRD file (relative to CRD_DIR, as crd_patterns names it) -> the (group, kind) it defines."""
    out: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")) + sorted(CRD_DIR.glob("more/*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                out.setdefault(str(path.relative_to(CRD_DIR)), set()).add((doc["spec"]["group"], doc["spec"]["names"]["kind"]))
    return out


def _preflight(kubeconfig) -> tuple[int, str]:
    from hybridml.cli import app

    result = CliRunner().invoke(app, ["preflight", "local", "--check", "datacenters", "--kubeconfig", str(kubeconfig)])
    return result.exit_code, result.output


def test_preflight_finds_every_prerequisite_then_names_the_missing_crd(dc_local):
    kubeconfig, api = dc_local
    # what a platform team provides beyond the CRDs and the StorageClass: the public listeners' issuer
    api.post("/apis/cert-manager.io/v1/clusterissuers", {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
                                                         "metadata": {"name": "hybridml-public"}, "spec": {"selfSigned": {}}})
    code, out = _preflight(kubeconfig)
    assert code == 0, out
    assert "every prerequisite of dc-local is present" in out and "FlinkDeployment" in out and "MISSING" not in out

    api.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{FLINK_CRD}")
    wait_for("the Flink CRD to go", lambda: api.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                                             f"{FLINK_CRD}") is None, timeout=60)
    code, out = _preflight(kubeconfig)
    assert code == 1, out
    missing = [line for line in out.splitlines() if "MISSING" in line]
    assert len(missing) == 1 and "FlinkDeployment" in missing[0], out
    assert "flink-kubernetes-operator" in out and "1.13.0" in out     # the fix names the operator and its release
