"""A real node: the Ansible bootstrap makes a test host a Kubernetes node with a real kubelet (needs root).

One module-scoped set-up, used in order: a local control plane made joinable by kubeadm's phases
(hybridml/local/kubeadm.py) and rack r2's three test hosts, r2-h01 real (kubelet + containerd from the
toolchain, tools/testhosts/realnode.py), r2-h02/r2-h03 simulated ->
bootstrap with a wrong join token: r2-h01 fails at the join, named with its task; the others finish ->
re-run with the right token: r2-h01 joins (kubeadm join), the others change nothing ->
the node is Ready with the inventory's labels and taints, and only the simulated hosts become kwok nodes ->
a pod pinned to it runs the locally built workload image; its log is read through the API server ->
one more run changes nothing on the real host.
In CI (CI=true) missing prerequisites fail the module; elsewhere they skip it with the reason.
"""
from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.conftest import IN_CI, require
from tests.datacenter import prerequisites

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

REAL, SIMULATED = "r2-h01", ["r2-h02", "r2-h03"]
HOSTS = [REAL, *SIMULATED]
WRONG_TOKEN = "aaaaaa.aaaaaaaaaaaaaaaa"   # well-formed, never issued: what an expired token looks like
TIMINGS: dict[str, float] = {}


_missing_prerequisite = prerequisites.missing_for_real_node


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _missing_prerequisite()
    require(reason is None, reason or "")
    from hybridml.local import controlplane
    from hybridml.local.nodes import ClusterDef

    state = tmp_path_factory.mktemp("controlplane")
    t0 = time.monotonic()
    try:
        controlplane.up_cluster(ClusterDef(name="dc-local"), state, None)
        TIMINGS["control plane up (s)"] = time.monotonic() - t0
        yield state
    finally:
        controlplane.down(state)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, cluster):
    from tools import testhosts

    state = tmp_path_factory.mktemp("testhosts")
    _, hosts = testhosts.hosts_from_spec("local", "dc-local")
    t0 = time.monotonic()
    try:
        made = testhosts.up([h for h in hosts if h[0] in HOSTS], datacenter="dc-local", state_dir=state, log=print,
                            owner_pid=os.getpid(), wait_s=600, real_hosts=[REAL])
    except testhosts.TestHostError as exc:
        testhosts.down(state)
        if IN_CI:
            pytest.fail(f"CI=true but the test hosts could not be created: {exc}", pytrace=False)
        pytest.skip(f"test hosts could not be created: {exc}")
    TIMINGS["hosts up (s)"] = time.monotonic() - t0
    yield made
    testhosts.down(state)


@pytest.fixture(scope="module")
def join(cluster):
    from hybridml.local.kubeadm import make_joinable

    t0 = time.monotonic()
    settings = make_joinable("dc-local", cluster)
    TIMINGS["control plane made joinable (s)"] = time.monotonic() - t0
    return settings


@pytest.fixture(scope="module")
def api(cluster):
    from hybridml.local.controlplane import api_client

    client = api_client("dc-local", cluster)
    yield client
    client.close()


def inventory_of(fleet, local_env):
    from datacenter.files import load_overrides
    from datacenter.inventory import build_inventory

    return build_inventory(local_env, "dc-local", load_overrides(fleet.overrides_file))


def bootstrap(fleet, local_env, label: str, limit: list[str]):
    from datacenter.driver import run_bootstrap

    t0 = time.monotonic()
    result = run_bootstrap(inventory_of(fleet, local_env), limit=limit, connect_timeout=5)
    TIMINGS[label] = time.monotonic() - t0
    if result.artifacts_dir:  # kept by the driver after a failure: an expected one here
        shutil.rmtree(result.artifacts_dir, ignore_errors=True)
    return result


def explain(result) -> str:
    return "\n".join(f"{h.name}: {h.status} failed_task={h.failed_task!r} message={h.message!r} "
                     f"changed={h.changed_tasks}" for h in result.hosts.values())


@pytest.fixture(scope="module")
def failed_join(fleet, join, local_env):
    """First bootstrap, with a join token the cluster never issued."""
    from dataclasses import replace

    from tools.testhosts import realnode

    realnode.attach(fleet, REAL, replace(join, token=WRONG_TOKEN), join_timeout="15s")
    return bootstrap(fleet, local_env, "first bootstrap, 3 hosts, wrong token (s)", HOSTS)


@pytest.fixture(scope="module")
def joined(fleet, cluster, local_env, failed_join):
    """Re-run as the local stack joins: `hybridml local up` had made the host a kwok node (here:
    register_kwok_nodes); join_local_control_plane removes it and hands out a fresh token."""
    from datacenter.kwok import register_kwok_nodes
    from hybridml.local.paths import ClusterPaths
    from tools.testhosts import realnode

    register_kwok_nodes(ClusterPaths(cluster / "clusters" / "dc-local").kubeconfig, inventory_of(fleet, local_env), [REAL])
    realnode.join_local_control_plane(fleet, "dc-local", cluster)
    return bootstrap(fleet, local_env, "re-run with the right token (s)", HOSTS)


def test_a_failed_join_names_host_and_task_and_the_rack_goes_on(failed_join):
    statuses = {name: h.status for name, h in failed_join.hosts.items()}
    assert statuses == {REAL: "failed", SIMULATED[0]: "changed", SIMULATED[1]: "changed"}, explain(failed_join)
    failed = failed_join.hosts[REAL]
    assert failed.failed_task == "Kubernetes node | kubeadm join failed", explain(failed_join)
    assert "kubeadm join failed" in failed.message and "aaaaaa" in failed.message, failed.message
    print(f"\n{REAL} failed at {failed.failed_task!r}: {failed.message}")


def test_a_rerun_with_the_fix_converges(joined):
    statuses = {name: h.status for name, h in joined.hosts.items()}
    assert statuses == {REAL: "changed", SIMULATED[0]: "ok", SIMULATED[1]: "ok"}, explain(joined)
    assert "Kubernetes node | Run kubeadm join" in joined.hosts[REAL].changed_tasks, explain(joined)
    assert all(joined.hosts[h].changed == 0 for h in SIMULATED), explain(joined)
    TIMINGS["real host: join to Ready (s)"] = joined.hosts[REAL].finished - joined.hosts[REAL].started


def test_the_node_is_ready_with_the_inventorys_labels_and_taints(fleet, local_env, joined, api):
    from tools.testhosts import realnode

    host = inventory_of(fleet, local_env).host(REAL)
    node = api.get(f"/api/v1/nodes/{REAL}")
    ready = [c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready == ["True"], node["status"]["conditions"]
    assert host.labels.items() <= node["metadata"]["labels"].items()
    taints = {f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in node["spec"].get("taints", [])}
    assert taints == {*host.taints, realnode.LOCAL_IMAGES_TAINT}
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v" + fleet_version()
    assert info["containerRuntimeVersion"].startswith("containerd://2.")
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})


def test_local_up_leaves_the_real_node_alone(joined, api):
    """`hybridml local up` syncs its kwok nodes, the datacenter's hosts among them: never over a real kubelet's."""
    from hybridml.local.nodes import NodeDef, sync_nodes

    counts = sync_nodes(api, [NodeDef(name=REAL, labels={"hybridml.io/simulated": "true"})])
    node = api.get(f"/api/v1/nodes/{REAL}")
    assert counts["total"] == 0 and "hybridml.io/simulated" not in node["metadata"]["labels"], counts


def fleet_version() -> str:
    from tools.testhosts import KUBERNETES_VERSION

    return KUBERNETES_VERSION


def test_only_the_simulated_hosts_become_kwok_nodes(fleet, local_env, cluster, joined):
    from datacenter.kwok import register_kwok_nodes, simulated_hosts
    from hybridml.local.paths import ClusterPaths

    inventory = inventory_of(fleet, local_env)
    assert simulated_hosts(inventory, HOSTS) == SIMULATED
    kubeconfig = ClusterPaths(cluster / "clusters" / "dc-local").kubeconfig
    assert register_kwok_nodes(kubeconfig, inventory, simulated_hosts(inventory, HOSTS)) == SIMULATED


def test_a_pod_runs_the_local_workload_image_and_its_log_is_read(fleet, joined, api):
    from tools.testhosts import realnode

    host_taints = api.get(f"/api/v1/nodes/{REAL}")["spec"]["taints"]
    marker = f"hybridml-{os.getpid()}"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello", "namespace": "default"},
        "spec": {
            "restartPolicy": "Never", "hostNetwork": True,   # no pod network on the test hosts (loopback CNI only)
            "nodeSelector": {"kubernetes.io/hostname": REAL},
            "tolerations": [{"key": t["key"], "operator": "Equal", "value": t.get("value", ""), "effect": t["effect"]}
                            for t in host_taints],
            "containers": [{
                "name": "hello", "image": realnode.images(fleet)["workload"], "imagePullPolicy": "Never",
                "args": [marker],
                "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
        },
    }
    t0 = time.monotonic()
    api.post("/api/v1/namespaces/default/pods", pod)
    deadline = time.monotonic() + 90
    while (phase := api.get("/api/v1/namespaces/default/pods/hello")["status"].get("phase")) not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline, f"pod still {phase}: {api.get('/api/v1/namespaces/default/pods/hello')['status']}"
        time.sleep(1)
    TIMINGS["pod scheduled to finished (s)"] = time.monotonic() - t0
    status = api.get("/api/v1/namespaces/default/pods/hello")["status"]
    assert phase == "Succeeded", status
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    # the API server streams it from the kubelet's logs endpoint (its kubelet client certificate)
    code, log = api.request_raw("GET", "/api/v1/namespaces/default/pods/hello/log", accept="*/*")
    assert code == 200, log
    assert log.decode().strip() == f"hybridml-hello node={REAL} pod=hello hostname={REAL} uid=65534 args={marker}"


def test_another_run_changes_nothing_on_the_real_node(fleet, local_env, joined):
    result = bootstrap(fleet, local_env, "third run, real host (s)", [REAL])
    assert result.hosts[REAL].status == "ok", explain(result)
    assert result.hosts[REAL].changed == 0, explain(result)
    print("\nreal node timings: " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))
