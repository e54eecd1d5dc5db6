"""End to end (issue 17): the real kube-scheduler places every pod of a plan on the nodes that plan buys/uses.

A small generated environment (`tools.generate`, dev profile: one cloud region, one datacenter of 12 hosts) is
solved; one local control plane per site it uses (etcd, kube-apiserver, controller-manager, kube-scheduler, kwok;
no CRDs) gets exactly the plan's nodes as kwok nodes (`hybridml.local.fromspec`: a cloud site the instances of
`SitePlan.nodes`, without the sim fleet's spare and system nodes; a datacenter its hosts). Every pod the plan
counts — each replica of each pipeline (a LeaderWorkerSet group: its leader and workers), each data pod (a feature
view's Redis, a collection's Qdrant replicas) — is created as a bare Pod carrying exactly the requests, node
selectors, tolerations, affinity and topology spread of the pod template `workloads/render` builds for it. The test
asserts that the scheduler binds every one of them within a bounded time, then, as a negative control, removes a
node the plan needs (one holding a pod that fits on no other node's free room) and asserts that this pod, created
again, stays Pending as Unschedulable.

Needs the Go-built toolchain (`scripts/toolchain.sh`): with CI=true a missing toolchain fails the test, elsewhere
it is skipped with the reason printed.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from hybridml.local import api_client, down, up
from hybridml.local.fromspec import cluster_name, datacenter_nodes, planned_cloud_nodes
from hybridml.local.nodes import ClusterDef
from hybridml.local.toolchain import find_binaries, kwok_stage_files
from infra import labels as L
from infra.errors import ToolchainMissing
from infra.kube import quantity_value
from infra.loader import parse_environment
from infra.spec import CloudSite, Environment
from policies.placement.plan import PlacementPlan
from policies.placement.solver import solve
from tests.conftest import dump, require
from tests.e2e.kube import wait_for
from tools.generate import generate
from workloads import planning
from workloads.render import cpu, feature_store, qdrant, triton, vllm
from workloads.render.context import SiteContext

pytestmark = pytest.mark.e2e

SEED = 7
NAMESPACE = "default"
BIND_TIMEOUT_S = 120.0
SCHEDULING_FIELDS = ("nodeSelector", "affinity", "tolerations", "topologySpreadConstraints")
RESOURCES = ("cpu", "memory", L.GPU_RESOURCE)


# --------------------------------------------------------------------------- the plan and its pods (pure)


def _environment() -> tuple[Environment, PlacementPlan]:
    env = parse_environment(dump(generate("dev", 1, seed=SEED)), f"generated-dev-{SEED}.yaml")
    return env, solve(env, time_limit=20)


def _container(c: dict) -> dict:
    return {"name": c.get("name") or "server", "image": "registry.invalid/hybridml-sched-probe:0",
            "resources": c.get("resources") or {}}


def _pod(name: str, labels: dict, spec: dict, containers: list[dict], init: list[dict] | None = None) -> dict:
    """A bare Pod with the scheduling-relevant part of a rendered pod template (no volumes: the scheduler
    judges requests, selectors, affinity, tolerations and spread; a PVC would only wait for a provisioner)."""
    body: dict[str, Any] = {k: spec[k] for k in SCHEDULING_FIELDS if spec.get(k)}
    body["automountServiceAccountToken"] = False
    body["containers"] = [_container(c) for c in containers]
    if init:
        body["initContainers"] = [_container(c) for c in init]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name[:253], "namespace": NAMESPACE, "labels": dict(labels)}, "spec": body}


def _template_pods(prefix: str, template: dict, count: int) -> list[dict]:
    s = template.get("spec") or {}
    return [_pod(f"{prefix}-{i}", (template.get("metadata") or {}).get("labels") or {}, s, s.get("containers") or [],
                 s.get("initContainers")) for i in range(count)]


def _replica_pods(obj: dict) -> tuple[int, list[dict]]:
    """(replicas, pods) of one rendered model-server workload."""
    kind, name, spec = obj["kind"], obj["metadata"]["name"], obj["spec"]
    if kind == "Deployment":
        return spec["replicas"], _template_pods(name, spec["template"], spec["replicas"])
    if kind == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        out = []
        for r in range(spec["replicas"]):
            out += _template_pods(f"{name}-{r}-leader", lwt["leaderTemplate"], 1)
            out += _template_pods(f"{name}-{r}-worker", lwt["workerTemplate"], lwt["size"] - 1)
        return spec["replicas"], out
    raise AssertionError(f"unexpected model-server workload {kind}/{name}")


def plan_pods(env: Environment, plan: PlacementPlan, site: str) -> tuple[list[dict], Counter]:
    """Every pod the plan counts at `site`, as the workloads render it; and per item how many replicas/data pods."""
    ctx = SiteContext(env_name=env.name, site=site, site_kind=planning.site_kind(env, site), domain="sched.test",
                      privacy_zones=planning.privacy_zones(env, site))
    sp = plan.site(site)
    pods: list[dict] = []
    counted: Counter = Counter()
    for name, replicas in sorted(sp.pipelines.items()):
        p = env.pipeline(name)
        if p.engine.kind == "vllm":
            for obj in vllm.objects(ctx, env, p, replicas, NAMESPACE):
                if obj["kind"] in ("Deployment", "LeaderWorkerSet"):
                    n, made = _replica_pods(obj)
                    counted[name] += n
                    pods += made
        elif p.engine.kind == "triton":
            per_variant = planning.variant_replicas(p, replicas)
            isvcs = triton.inference_services(ctx, env, p, replicas, NAMESPACE)
            for n, isvc in zip(per_variant.values(), isvcs, strict=True):
                predictor = isvc["spec"]["predictor"]
                model = {"name": "kserve-container", **predictor["model"]}
                pods += [_pod(f"{isvc['metadata']['name']}-{i}", isvc["metadata"]["labels"], predictor, [model])
                         for i in range(n)]
                counted[name] += n
        else:
            assert p.engine.kind == "cpu", f"{name}: engine {p.engine.kind}: build its pods here"
            for obj in cpu.objects(ctx, env, p, replicas, NAMESPACE, data_env=[], has_credentials=False):
                if obj["kind"] == "Deployment":
                    n, made = _replica_pods(obj)
                    counted[name] += n
                    pods += made
    for d in plan.data:
        if site not in d.sites:
            continue
        if d.kind == "feature_view":
            view = next(v for v in env.feature_views if v.name == d.name)
            objs, count = feature_store.redis_objects(ctx, view, NAMESPACE, fleet_sources=[]), 1   # the plan counts one Redis
        else:
            col = next(c for c in env.collections if c.name == d.name)
            objs, count = qdrant.objects(ctx, col, NAMESPACE, fleet_sources=[]), col.replication_factor
        store = next(o for o in objs if o["kind"] == "StatefulSet")
        pods += _template_pods(store["metadata"]["name"], store["spec"]["template"], count)
        counted[f"{d.kind}:{d.name}"] += count
    return pods, counted


def _requests(pod: dict) -> dict[str, float]:
    """What the scheduler counts: the containers' requests summed, or the largest init container's if more."""
    def of(c: dict) -> dict[str, float]:
        req = (c.get("resources") or {}).get("requests") or {}
        return {r: quantity_value(req[r]) if r in req else 0.0 for r in RESOURCES}

    total = {r: sum(of(c)[r] for c in pod["spec"]["containers"]) for r in RESOURCES}
    for c in pod["spec"].get("initContainers") or []:
        total = {r: max(total[r], of(c)[r]) for r in RESOURCES}
    return total


def test_plan_pods_are_the_plans_replicas_and_data_pods():
    """The pods the scheduler test creates are exactly the plan's: every replica and data pod, no more."""
    env, plan = _environment()
    for sp in plan.sites:
        if not (sp.pipelines or sp.data):
            continue
        pods, counted = plan_pods(env, plan, sp.name)
        assert {k: v for k, v in counted.items() if ":" not in k} == dict(sp.pipelines)
        assert sorted(k for k in counted if ":" in k) == sorted(sp.data)
        assert len({p["metadata"]["name"] for p in pods}) == len(pods)
        gpu_pods = [p for p in pods if _requests(p)[L.GPU_RESOURCE]]
        assert all(p["spec"].get("tolerations") for p in gpu_pods)


# --------------------------------------------------------------------------- against the real scheduler


def _require_toolchain() -> None:
    try:
        find_binaries()
        kwok_stage_files()
    except ToolchainMissing as e:
        require(False, f"the local toolchain is missing ({e}); the scheduler test of issue 17 needs it")




def _pods(api) -> list[dict]:
    return api.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]


def _unschedulable(pod: dict) -> bool:
    return any(c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _needed_node(api) -> tuple[str, dict]:
    """A node the plan needs: it holds a pod that fits on no other node's free room (cpu, memory or GPUs)."""
    nodes = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes")["items"]}
    used: dict[str, dict[str, float]] = {name: dict.fromkeys(RESOURCES, 0.0) for name in nodes}
    bound = [p for p in _pods(api) if p["spec"].get("nodeName")]
    for p in bound:
        for r, v in _requests(p).items():
            used[p["spec"]["nodeName"]][r] += v

    def free(name: str) -> dict[str, float]:
        alloc = nodes[name]["status"]["allocatable"]
        return {r: quantity_value(alloc.get(r, 0)) - used[name][r] for r in RESOURCES}

    for p in sorted(bound, key=lambda p: (-_requests(p)[L.GPU_RESOURCE], -_requests(p)["cpu"], p["metadata"]["name"])):
        need, home = _requests(p), p["spec"]["nodeName"]
        if all(any(free(other)[r] < need[r] for r in RESOURCES) for other in nodes if other != home):
            return home, p
    raise AssertionError("no node of the plan holds a pod that fits nowhere else: the negative control has nothing to remove")


@pytest.fixture(scope="module")
def sched_clusters(tmp_path_factory):
    _require_toolchain()
    env, plan = _environment()
    sites = [sp.name for sp in plan.sites if sp.pipelines or sp.data]
    defs = []
    for name in sites:
        site = env.site(name)
        nodes = planned_cloud_nodes(env, site, plan) if isinstance(site, CloudSite) else datacenter_nodes(env, site)
        defs.append(ClusterDef(name=f"sched-{cluster_name(name)}", nodes=nodes))
    state = tmp_path_factory.mktemp("sched-clusters")
    t0 = time.monotonic()
    up(defs, state_dir=state, crd_dir=None, log=print)
    print(f"control planes up ({', '.join(d.name for d in defs)}; {sum(len(d.nodes) for d in defs)} nodes): "
          f"{time.monotonic() - t0:.1f}s")
    apis = {name: api_client(d.name, state) for name, d in zip(sites, defs, strict=True)}
    try:
        yield env, plan, apis
    finally:
        for api in apis.values():
            api.close()
        down(state)


def test_the_scheduler_binds_every_pod_of_the_plan_and_not_without_a_needed_node(sched_clusters):
    env, plan, apis = sched_clusters
    t0 = time.monotonic()
    created: dict[str, int] = {}
    for site, api in apis.items():
        wait_for(f"{site}: the default service account", lambda api=api: api.get_or_none(
            f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"), timeout=60)
        pods, _ = plan_pods(env, plan, site)
        for pod in pods:
            api.post(f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
        created[site] = len(pods)

    def all_bound() -> bool:
        return all(len(ps := _pods(api)) == created[site] and all(p["spec"].get("nodeName") for p in ps)
                   for site, api in apis.items())

    try:
        wait_for("every pod of the plan to be bound to a node", all_bound, timeout=BIND_TIMEOUT_S)
    except AssertionError:
        pending = {site: [(p["metadata"]["name"], [c.get("message") for c in (p.get("status") or {}).get("conditions") or []])
                          for p in _pods(api) if not p["spec"].get("nodeName")] for site, api in apis.items()}
        raise AssertionError(f"pods of the plan left Pending by the kube-scheduler: {pending}") from None
    print(f"scheduled {sum(created.values())} pods ({created}) in {time.monotonic() - t0:.1f}s")

    # negative control: without a node the plan needs, the scheduler must leave a pod Pending
    site = next(s for s in apis if isinstance(env.site(s), CloudSite))
    api = apis[site]
    node, pod = _needed_node(api)
    for p in _pods(api):
        if p["spec"].get("nodeName") == node:
            api.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{p['metadata']['name']}",
                        params={"gracePeriodSeconds": "0"}, ok=(200, 202, 404))
    api.delete(f"/api/v1/nodes/{node}")
    again = _pod(f"{pod['metadata']['name']}-again", pod["metadata"].get("labels") or {}, pod["spec"],
                 pod["spec"]["containers"], pod["spec"].get("initContainers"))
    api.post(f"/api/v1/namespaces/{NAMESPACE}/pods", again)
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/{again['metadata']['name']}"
    p = wait_for(f"{site}: {again['metadata']['name']} to be reported Unschedulable without node {node}",
              lambda: (lambda x: x if _unschedulable(x) else None)(api.get(path)), timeout=60)
    assert not p["spec"].get("nodeName")
    print(f"without {node}: {again['metadata']['name']} Unschedulable ({_requests(again)})")
