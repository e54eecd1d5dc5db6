"""End to end: two local control planes (kwok fake nodes), a GPU Deployment scheduled onto a
fake GPU node and marked Running, CRDs Established, then a clean ``down``.

Needs the Go-built toolchain (``scripts/toolchain.sh``). Outside CI the test is skipped, with the
reason printed, when the toolchain is missing; with CI=true it fails instead.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hybridml.local import DEFAULT_CRD_DIR, api_client, down, status, up
from hybridml.local.components import COMPONENTS, CRD_COMPONENTS
from hybridml.local.toolchain import find_binaries, kwok_stage_files
from infra.errors import ToolchainMissing
from tests.e2e.kube import wait_for
from tools.sim_metrics import component_cpu_seconds

pytestmark = pytest.mark.e2e

IN_CI = os.environ.get("CI") == "true"
CRD_DIR = Path(os.environ.get("HYBRIDML_CRD_DIR", DEFAULT_CRD_DIR))
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"

GPU_CLUSTER = {
    "name": "e2e-gpu",
    "nodes": [
        {
            "name": f"gpu-node-{i}",
            "labels": {
                "nvidia.com/gpu.product": GPU_PRODUCT,
                "node.kubernetes.io/instance-type": "p5.48xlarge",
            },
            "taints": ["nvidia.com/gpu=present:NoSchedule"],
            "capacity": {"cpu": "192", "memory": "2048Gi", "pods": "110", "nvidia.com/gpu": "8"},
        }
        for i in range(2)
    ],
}

CPU_CLUSTER = {
    "name": "e2e-cpu",
    "nodes": [
        {
            "name": f"cpu-node-{i}",
            "labels": {
                "topology.kubernetes.io/zone": "dc1-zone-a",
                "hybridml.io/datacenter": "dc1",
                "hybridml.io/rack": f"r{i}",
                "hybridml.io/privacy-zone": "restricted",
            },
            "capacity": {"cpu": "64", "memory": "512Gi", "pods": "110"},
        }
        for i in range(2)
    ],
}


def _require_toolchain() -> None:
    try:
        find_binaries()
        kwok_stage_files()
    except ToolchainMissing as e:
        if IN_CI:
            pytest.fail(f"CI=true but the local toolchain is missing: {e}", pytrace=False)
        msg = f"local toolchain missing, skipping e2e test: {e}"
        print(msg)
        pytest.skip(msg)


def _gpu_deployment() -> dict:
    labels = {"app": "gpu-probe"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "gpu-probe", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.product": GPU_PRODUCT},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
                    ],
                    "containers": [
                        {
                            "name": "probe",
                            "image": "registry.invalid/probe:0",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }




@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    _require_toolchain()
    if not CRD_DIR.is_dir():
        if IN_CI:
            pytest.fail(f"CRD directory {CRD_DIR} missing", pytrace=False)
        pytest.skip(f"CRD directory {CRD_DIR} missing")
    sd = tmp_path_factory.mktemp("local-clusters")
    yield sd
    down(sd)


def test_two_clusters_gpu_pod_runs_and_down_cleans_up(state_dir):
    t0 = time.monotonic()
    res = up([GPU_CLUSTER, CPU_CLUSTER], state_dir=state_dir, crd_dir=CRD_DIR, log=print)
    print(f"up (cold): {time.monotonic() - t0:.1f}s")
    assert set(res) == {"e2e-gpu", "e2e-cpu"}
    assert all(s.running for s in res.values()), res

    # warm up is a no-op that keeps the same processes
    pids = {n: dict(s.components) for n, s in res.items()}
    t0 = time.monotonic()
    res2 = up([GPU_CLUSTER, CPU_CLUSTER], state_dir=state_dir, crd_dir=CRD_DIR)
    print(f"up (warm): {time.monotonic() - t0:.1f}s")
    assert {n: s.components for n, s in res2.items()} == pids

    merged = (Path(state_dir) / "kubeconfig").read_text()
    assert "name: e2e-gpu" in merged and "name: e2e-cpu" in merged

    gpu = api_client("e2e-gpu", state_dir)
    cpu = api_client("e2e-cpu", state_dir)

    # nodes carry the definition
    nodes = {n["metadata"]["name"]: n for n in gpu.get("/api/v1/nodes")["items"]}
    assert set(nodes) == {"gpu-node-0", "gpu-node-1"}
    for n in nodes.values():
        assert n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert n["metadata"]["labels"]["type"] == "kwok"
        assert n["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "p5.48xlarge"
        assert n["status"]["capacity"]["nvidia.com/gpu"] == "8"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in n["spec"]["taints"]
    cpu_nodes = cpu.get("/api/v1/nodes")["items"]
    assert {n["metadata"]["labels"]["hybridml.io/privacy-zone"] for n in cpu_nodes} == {"restricted"}
    assert all("nvidia.com/gpu" not in n["status"]["capacity"] for n in cpu_nodes)

    # a GPU Deployment lands on a GPU node and kwok marks its pod Running
    gpu.post("/apis/apps/v1/namespaces/default/deployments", _gpu_deployment())

    def running_pod():
        pods = gpu.get("/api/v1/namespaces/default/pods", params={"labelSelector": "app=gpu-probe"})["items"]
        return next((p for p in pods if p.get("status", {}).get("phase") == "Running"), None)

    pod = wait_for("the gpu-probe pod to be Running", running_pod, timeout=180)
    assert pod["spec"]["nodeName"] in {"gpu-node-0", "gpu-node-1"}

    # the same pod without the toleration cannot schedule on the GPU cluster (taint respected)
    untolerated = _gpu_deployment()
    untolerated["metadata"]["name"] = "no-toleration"
    untolerated["spec"]["selector"]["matchLabels"] = {"app": "no-toleration"}
    untolerated["spec"]["template"]["metadata"]["labels"] = {"app": "no-toleration"}
    untolerated["spec"]["template"]["spec"].pop("tolerations")
    gpu.post("/apis/apps/v1/namespaces/default/deployments", untolerated)

    def unschedulable():
        pods = gpu.get("/api/v1/namespaces/default/pods", params={"labelSelector": "app=no-toleration"})["items"]
        for p in pods:
            for c in p.get("status", {}).get("conditions", []):
                if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable":
                    return p
        return None

    p = wait_for("the untolerated pod to be reported Unschedulable", unschedulable, timeout=120)
    assert not p["spec"].get("nodeName")

    # no KEDA operator runs: the stand-in gives a ScaledObject the HPA KEDA would, and the cluster's own
    # HPA controller raises the Deployment to the ScaledObject's floor (and the HPA goes with it)
    gpu.post("/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects", {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "gpu-probe", "namespace": "default"},
        "spec": {"scaleTargetRef": {"name": "gpu-probe"}, "minReplicaCount": 3, "maxReplicaCount": 5,
                 "triggers": [{"type": "prometheus", "metadata": {
                     "serverAddress": "http://prometheus.invalid:9090", "query": "vector(0)", "threshold": "4"}}]}})
    hpa_path = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/keda-hpa-gpu-probe"
    hpa = wait_for("the simulated KEDA HPA", lambda: gpu.get_or_none(hpa_path), timeout=60)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 5)
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ScaledObject"

    def ready_replicas():
        d = gpu.get("/apis/apps/v1/namespaces/default/deployments/gpu-probe")
        return d["spec"]["replicas"] == 3 and d.get("status", {}).get("readyReplicas") == 3
    wait_for("gpu-probe to be raised to the ScaledObject's floor of 3 ready replicas", ready_replicas, timeout=120)
    gpu.delete("/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects/gpu-probe")
    wait_for("the HPA to go with its ScaledObject", lambda: gpu.get_or_none(hpa_path) is None, timeout=90)

    # a deleted simulated pod stops when told (stages/pod-delete.yaml), not after a random part of its grace
    # period; one that asks to drain (the stage's delay annotation) is still Terminating after that
    for name, notes in (("stops-now", {}), ("drains", {"pod-delete.stage.kwok.x-k8s.io/delay": "60s"})):
        gpu.post("/api/v1/namespaces/default/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": notes},
            "spec": {**_gpu_deployment()["spec"]["template"]["spec"], "terminationGracePeriodSeconds": 120}})
        wait_for(f"{name} Running", lambda n=name: gpu.get(f"/api/v1/namespaces/default/pods/{n}")
                 .get("status", {}).get("phase") == "Running", timeout=60)
    t_delete = time.monotonic()
    for name in ("stops-now", "drains"):
        gpu.delete(f"/api/v1/namespaces/default/pods/{name}")
    wait_for("the deleted pod to be gone", lambda: gpu.get_or_none("/api/v1/namespaces/default/pods/stops-now") is None,
             timeout=30)
    assert time.monotonic() - t_delete < 15
    assert gpu.get("/api/v1/namespaces/default/pods/drains")["metadata"].get("deletionTimestamp")
    gpu.request("DELETE", "/api/v1/namespaces/default/pods/drains", params={"gracePeriodSeconds": "0"}, ok=(200, 202))

    # a CRD from the CRD directory is Established (and the webhook-converted one was accepted)
    for name in ("inferenceservices.serving.kserve.io", "llminferenceservices.serving.kserve.io"):
        crd = cpu.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conds.get("Established") == "True", (name, conds)
    gpu.close()
    cpu.close()

    # the CPU each component used so far, summed over both clusters (what the benchmarks account with)
    cpu = component_cpu_seconds(state_dir)
    # the operators run only where their CRDs are installed: KServe's (top-level files) in these clusters, KubeRay's
    # (shared/crds/more) not
    assert set(cpu) == set(COMPONENTS) - {"kuberay-operator"} and cpu["kube-apiserver"] > 1.0, cpu
    assert set(CRD_COMPONENTS) == {"kuberay-operator", "kserve-controller"}

    # down stops everything up started
    stopped = down(state_dir)
    assert set(stopped) == {"e2e-gpu", "e2e-cpu"}
    after = status(state_dir)
    assert all(s.stopped for s in after.values()), after
    for comps in pids.values():
        for pid in comps.values():
            assert pid is not None
            stat = Path(f"/proc/{pid}/stat")
            assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"), pid
