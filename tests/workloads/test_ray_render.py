"""Batch pipelines rendered for KubeRay (workloads/render/ray.py, workloads/batch_job.py): the RayJob or RayCluster +
CronJob of each site share, valid against the CRDs in shared/crds/more and against the pinned release's own (v1.5.0,
from the Go module cache), pods pinned to their tier like the serving stack's, and the pins in one place."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from clusters.baseline import PRIORITY_BATCH
from clusters.kuberay import KUBERAY_CHART, KUBERAY_CHART_VERSION, KUBERAY_NAMESPACE, kuberay_values
from clusters.sizing import namespace_quotas, node_pools
from infra import labels as L
from infra.versions import OPERATORS
from tests.conftest import REPO, require
from tests.workloads import schemas
from tests.workloads.conftest import rendered
from workloads.render import meta, ray

RAY_KINDS = ("RayJob", "RayCluster")


def batch_objects(stack) -> list:
    return [o for o in stack.objects if meta.BATCH_PIPELINE in o.manifest["metadata"].get("labels", {})
            or o.kind in RAY_KINDS]


def ray_pod_templates(m: dict) -> dict[str, dict]:
    spec = m["spec"]["rayClusterSpec"] if m["kind"] == "RayJob" else m["spec"]
    out = {"head": spec["headGroupSpec"]["template"]}
    out.update({g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]})
    if m["kind"] == "RayJob":
        out["submitter"] = m["spec"]["submitterPodTemplate"]
    return out


def test_local_renders_a_rayjob_for_one_off_and_a_raycluster_with_cronjob_for_recurring_work():
    stack = rendered("local")
    objs = {(o.site, o.kind, o.obj_name): o for o in batch_objects(stack)}
    job = objs[("aws-use1", "RayJob", "catalog-captions")].manifest
    assert job["metadata"]["namespace"] == "ml-internal"
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["submissionMode"] == "K8sJobMode"
    assert job["spec"]["activeDeadlineSeconds"] == 3 * 3600
    assert job["spec"]["entrypoint"] == f"python {ray.SCRIPT_MOUNT}/{ray.SCRIPT_FILE}"
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert [(g["groupName"], g["replicas"], g["minReplicas"], g["maxReplicas"]) for g in workers] == [("workers", 2, 2, 2)]
    assert ("aws-use1", "ConfigMap", "catalog-captions-batch-script") in objs
    cluster = objs[("dc-local", "RayCluster", "profile-embeddings")].manifest
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    assert [(g["replicas"], g["minReplicas"], g["maxReplicas"]) for g in cluster["spec"]["workerGroupSpecs"]] == [(0, 0, 3)]
    cron = objs[("dc-local", "CronJob", "profile-embeddings-submit")].manifest
    assert cron["spec"]["schedule"] == "0 3 * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:5] == ["ray", "job", "submit", "--address",
                           "http://profile-embeddings-head-svc.ml-pii.svc.cluster.local:8265"]
    assert command[-3:] == ["python", "-m", "hybridml_batch.embed"]
    assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 2 * 3600
    assert stack.summary["sites"]["dc-local"]["batch"]["profile-embeddings"]["kind"] == "RayCluster"


@pytest.mark.parametrize("name", ["local", "dev"])
def test_batch_objects_validate_against_the_shared_crds(name):
    objs = batch_objects(rendered(name))
    assert {o.kind for o in objs} >= {"RayJob", "RayCluster", "CronJob", "NetworkPolicy"}
    problems = [f"{o.ref()}: {schemas.validate(o.manifest)[:3]}" for o in objs if schemas.validate(o.manifest)]
    assert not problems, "\n".join(problems)
    assert all(schemas.crd_index()[(o.api_version, o.kind)][0].startswith("kuberay.") for o in objs if o.kind in RAY_KINDS)


def _release_crds() -> Path:
    """config/crd/bases of the pinned ray-operator module in the Go module cache (scripts/toolchain.sh fetches it)."""
    cache = Path(os.environ.get("HYBRIDML_CACHE") or Path.home() / ".cache" / "hybridml")
    version = OPERATORS["kuberay-operator"].version
    return cache / "go" / "mod" / "github.com" / "ray-project" / "kuberay" / f"ray-operator@v{version}" / "config" / "crd" / "bases"


@pytest.mark.parametrize("name", ["local", "dev"])
def test_batch_objects_validate_against_the_pinned_releases_own_crds(name):
    """shared/crds/more holds a later KubeRay commit; the operator the program installs is v1.5.0, whose CRDs (in its
    Go module) must accept every field the program writes."""
    bases = _release_crds()
    require(bases.is_dir(), f"the ray-operator module is not in the Go module cache ({bases}): run scripts/toolchain.sh")
    index = {}
    for path in sorted(bases.glob("ray.io_*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for v in doc["spec"]["versions"]:
            if v.get("served", True):
                schema = schemas.convert(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
                schema["properties"]["metadata"] = {"type": "object"}
                index[(f"{doc['spec']['group']}/{v['name']}", doc["spec"]["names"]["kind"])] = schema
    problems = []
    for o in batch_objects(rendered(name)):
        if o.kind in RAY_KINDS:
            errs = list(jsonschema.Draft7Validator(index[(o.api_version, o.kind)]).iter_errors(o.manifest))
            problems += [f"{o.ref()}: {'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errs]
    assert not problems, "\n".join(problems[:20])


def test_pods_keep_to_their_tier_gpu_and_capacity_type():
    stack = rendered("local")
    objs = {(o.site, o.obj_name, o.kind): o.manifest for o in batch_objects(stack) if o.kind in RAY_KINDS}
    for m in objs.values():
        for t in ray_pod_templates(m).values():
            spec = t["spec"]
            assert spec["priorityClassName"] == PRIORITY_BATCH
            assert t["metadata"]["labels"][meta.BATCH_PIPELINE] in ("catalog-captions", "profile-embeddings")
            zones = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"][0]["matchExpressions"][0]
            assert zones["key"] == L.PRIVACY_ZONE
    job = objs[("aws-use1", "catalog-captions", "RayJob")]
    t = ray_pod_templates(job)
    assert t["workers"]["spec"]["nodeSelector"] == {L.GPU_PRODUCT: L.gpu_product("L4"), L.KARPENTER_CAPACITY_TYPE: "on-demand"}
    assert {"key": L.GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"} in t["workers"]["spec"]["tolerations"]
    assert t["workers"]["spec"]["containers"][0]["resources"]["limits"][L.GPU_RESOURCE] == "1"
    assert t["head"]["spec"]["nodeSelector"] == {L.KARPENTER_CAPACITY_TYPE: "on-demand"}
    assert not any(tol["key"] == L.GPU_TAINT_KEY for tol in t["head"]["spec"].get("tolerations", []))   # no GPU node
    cluster = objs[("dc-local", "profile-embeddings", "RayCluster")]
    t = ray_pod_templates(cluster)
    for role in ("head", "workers"):
        spec = t[role]["spec"]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms[0]["matchExpressions"][0]["values"] == ["pii"]           # the datacenter's pii racks only
        assert {"key": L.PRIVACY_TAINT_KEY, "operator": "Equal", "value": "pii", "effect": "NoSchedule"} in spec["tolerations"]
        assert "nodeSelector" not in spec                                      # no capacity types on own racks
    assert t["head"]["spec"]["serviceAccountName"] == "profile-embeddings"     # the autoscaler's account (KubeRay's)


def test_shards_split_the_items_over_sites():
    from policies.placement.plan import BatchPlacement, BatchSitePlacement, Explanation

    sites = [BatchSitePlacement(site=s, kind="cloud", workers=w, worker_groups={"on-demand": w}, items=i, worker_hours=1,
                                hours=1, cost_usd=1, usd_per_hour=1, capacity={}, head="x")
             for s, w, i in (("b", 1, 250), ("a", 3, 750))]
    bp = BatchPlacement(name="x", engine="vllm", privacy_tier="internal", items=1000, window_hours=1, needed_items_per_s=1,
                        planned_items_per_s=1, workers=4, finish_hours=1, cost_usd_per_run=1, sites=sites,
                        explanation=Explanation(summary=""))
    assert ray.shard(bp, "a") == (0, 7500) and ray.shard(bp, "b") == (7500, 10_000)
    compile(ray.BATCH_SCRIPT, "run_vllm.py", "exec")   # the generated Ray Data program is Python


def test_network_policy_admits_the_cluster_and_the_operator_only():
    stack = rendered("local")
    (np,) = [o.manifest for o in stack.objects if o.kind == "NetworkPolicy" and o.obj_name == "allow-ray-catalog-captions"]
    ingress = np["spec"]["ingress"]
    assert ingress[0] == {"from": [{"podSelector": {"matchLabels": {meta.BATCH_PIPELINE: "catalog-captions"}}}]}
    assert ingress[1]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": KUBERAY_NAMESPACE}
    assert ingress[1]["ports"] == [{"protocol": "TCP", "port": ray.DASHBOARD_PORT}]
    # the tier namespace still gets its default deny
    assert any(o.kind == "NetworkPolicy" and o.obj_name == "default-deny" and o.namespace == "ml-pii" and o.site == "dc-local"
               for o in stack.objects)


def test_quotas_and_node_pools_count_the_batch_pods_and_nodes():
    stack = rendered("local")
    env, plan = stack.env, stack.plan
    without = copy.deepcopy(plan)
    without.batch = None
    pii = {q.namespace: q for q in namespace_quotas(env, plan, "dc-local")}["ml-pii"]
    before = {q.namespace: q for q in namespace_quotas(env, without, "dc-local")}["ml-pii"]
    b = env.batch.pipeline("profile-embeddings")
    assert pii.pods - before.pods == 3 + 2
    assert pii.cpu - before.cpu == pytest.approx(3 * b.resources.cpu + b.head.cpu + 1.0)
    site = env.site("aws-use1")
    pools = {p.name: p for p in node_pools(env, site, plan.site("aws-use1"), {"g6.xlarge": 2, "m7i.2xlarge": 1})}
    base = {p.name: p for p in node_pools(env, site, plan.site("aws-use1"))}
    assert pools["gpu-l4"].planned_nodes == base["gpu-l4"].planned_nodes + 2
    assert pools["gpu-l4"].max_nodes >= base["gpu-l4"].max_nodes + 2
    assert "cpu" in pools and pools["cpu"].planned_nodes == 1


def test_kuberay_is_pinned_once():
    env_pins = dict(line.split("=", 1) for line in (REPO / "scripts" / "toolchain" / "versions.env").read_text().splitlines()
                    if line and not line.startswith("#"))
    assert env_pins["KUBERAY_VERSION"] == OPERATORS["kuberay-operator"].version == KUBERAY_CHART_VERSION
    assert KUBERAY_CHART == "kuberay-operator" and OPERATORS["kuberay-operator"].installed_by_program
    values = kuberay_values(type("A", (), {"node_selector": {L.NODE_ROLE: "system"}})())   # type: ignore[arg-type]
    assert values["resources"]["requests"] == values["resources"]["limits"]
