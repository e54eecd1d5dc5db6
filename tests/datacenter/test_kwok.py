"""kwok registration of bootstrapped hosts: the Node objects (pure), and a real cluster when one is up."""
from __future__ import annotations

import os

import pytest

from datacenter.kwok import node_manifests, register_kwok_nodes


def test_nodes_carry_the_inventory_labels_and_taints(local_inventory):
    nodes = {n["metadata"]["name"]: n for n in node_manifests(local_inventory)}
    assert list(nodes) == local_inventory.host_names
    pii = nodes["r2-h01"]
    assert pii["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    for key, value in local_inventory.host("r2-h01").labels.items():
        assert pii["metadata"]["labels"][key] == value
    assert pii["metadata"]["labels"]["topology.kubernetes.io/zone"] == "r2"
    assert pii["spec"]["taints"] == [{"key": "hybridml.io/privacy-zone", "value": "pii", "effect": "NoSchedule"}]
    assert nodes["r1-h01"]["spec"]["taints"] == []
    status = pii["status"]
    assert status["capacity"] == {"cpu": "16", "memory": "65536Mi", "pods": "110"}
    assert status["allocatable"] == {"cpu": "14400m", "memory": "58982Mi", "pods": "110"}  # minus systemReserved
    assert {"type": "InternalIP", "address": "10.77.2.11"} in status["addresses"]


def test_only_the_given_hosts(local_inventory):
    assert [n["metadata"]["name"] for n in node_manifests(local_inventory, ["r1-h03"])] == ["r1-h03"]


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory):
    """HYBRIDML_TEST_KUBECONFIG, else a throwaway local control plane (hybridml.local, needs the
    Go-built toolchain of scripts/toolchain.sh), else skip: there is no cluster to register into."""
    given = os.environ.get("HYBRIDML_TEST_KUBECONFIG")
    if given:
        yield given
        return
    try:
        from hybridml.local.controlplane import down, up
        from hybridml.local.toolchain import find_binaries

        find_binaries()
    except Exception as exc:  # noqa: BLE001 - no local control plane module or no toolchain on this machine
        print(f"SKIP: no cluster for kwok registration ({exc}); set HYBRIDML_TEST_KUBECONFIG or build the toolchain")
        pytest.skip(f"no cluster: set HYBRIDML_TEST_KUBECONFIG or build the toolchain ({type(exc).__name__})")
    state = tmp_path_factory.mktemp("kwok-cluster")
    status = up([{"name": "dc-local", "nodes": []}], state, None)
    try:
        yield status["dc-local"].kubeconfig
    finally:
        down(state)


@pytest.mark.slow
def test_registers_nodes_in_a_real_cluster(local_inventory, kubeconfig):
    import json
    import subprocess

    from datacenter.kwok import find_kubectl

    names = register_kwok_nodes(kubeconfig, local_inventory, ["r2-h01", "r1-h01"])
    assert register_kwok_nodes(kubeconfig, local_inventory, ["r2-h01", "r1-h01"]) == names  # idempotent
    kubectl = find_kubectl()
    try:
        nodes = json.loads(subprocess.run([kubectl, "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json"],
                                          capture_output=True, text=True, check=True).stdout)["items"]
        by_name = {n["metadata"]["name"]: n for n in nodes}
        pii = by_name["r2-h01"]
        for key, value in local_inventory.host("r2-h01").labels.items():
            assert pii["metadata"]["labels"][key] == value
        assert [t for t in pii["spec"]["taints"] if t["key"] == "hybridml.io/privacy-zone"] == [
            {"key": "hybridml.io/privacy-zone", "value": "pii", "effect": "NoSchedule"}]
        assert pii["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert pii["status"]["allocatable"]["cpu"] == "14400m"
        assert not [t for t in by_name["r1-h01"]["spec"].get("taints", []) if t["key"].startswith("hybridml.io/")]
    finally:
        subprocess.run([kubectl, "--kubeconfig", kubeconfig, "delete", "node", *names, "--ignore-not-found"],
                       capture_output=True)
