"""hybridml.local.fromspec: spec + plan -> local clusters whose kwok nodes look like the real fleet's,
sized so that every pod of the rendered serving stack schedules (checked with a small scheduler model
over the objects the real program emits under mocks)."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from clusters.local_cluster import default_context
from clusters.sizing import batch_nodes_at, node_pools
from datacenter.inventory import build_inventory
from hybridml.local.fromspec import SPARE_NODES_PER_GPU_POOL, SYSTEM_NODES, cluster_name, clusters_from_spec, system_instance_type
from hybridml.local.nodes import ClusterDef, coerce_cluster
from infra import labels as L
from infra.loader import load_environment, parse_environment
from infra.spec import CloudSite, Datacenter
from policies.placement import solve
from tests.conftest import REPO, dump

LOCAL_SPEC = str(REPO / "infra" / "environments" / "local.yaml")


@pytest.fixture(scope="module")
def local():
    env = load_environment(LOCAL_SPEC)
    plan = solve(env)
    return env, plan, {c.name: c for c in clusters_from_spec(env, plan)}


def _qty(v: str) -> float:
    """cpu in cores / memory in MiB / plain counts."""
    v = str(v)
    units = {"m": 1e-3, "Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "Ti": 1024.0 ** 2}
    for u, f in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if v.endswith(u):
            return float(v[: -len(u)]) * f
    if re.fullmatch(r"[0-9.]+", v):
        return float(v)
    raise ValueError(v)


def _mem_mi(v: str) -> float:
    return _qty(v) if not re.fullmatch(r"[0-9.]+", str(v)) else float(v) / 2 ** 20


def test_one_cluster_per_site_named_like_the_programs_contexts(local):
    env, _, clusters = local
    assert list(clusters) == [default_context(s.name) for s in env.sites]
    assert cluster_name("aws-use1") == "hybridml-aws-use1"
    for c in clusters.values():
        assert isinstance(c, ClusterDef) and c.nodes
        assert coerce_cluster(c) is c
        names = [n.name for n in c.nodes]
        assert len(set(names)) == len(names)
        assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) and len(n) <= 63 for n in names)
        for n in c.nodes:
            assert n.labels[L.SIMULATED] == "true"
            assert n.labels[L.SITE] == c.name.removeprefix("hybridml-")


def test_cloud_site_has_the_planned_instances_plus_headroom(local):
    env, plan, clusters = local
    site = env.site("aws-use1")
    assert isinstance(site, CloudSite)
    nodes = clusters["hybridml-aws-use1"].nodes
    by_type = Counter(n.labels[L.INSTANCE_TYPE] for n in nodes if n.labels["karpenter.sh/nodepool"] != "system")
    for it, count in plan.site("aws-use1").nodes.items():
        assert by_type[it] >= count, (it, by_type)
    gpu_nodes = [n for n in nodes if L.GPU_RESOURCE in n.capacity]
    planned_gpus = sum(plan.site("aws-use1").gpus_used.values())
    assert sum(int(n.capacity[L.GPU_RESOURCE]) for n in gpu_nodes) >= planned_gpus
    # the plan's instances, the batch stage's (batch_nodes_at: what Karpenter adds while runs go), one spare per pool
    batch_gpu = sum(n for it, n in batch_nodes_at(plan, "aws-use1").items()
                    if next(i for i in site.instance_types if i.name == it).gpu)
    assert len(gpu_nodes) == sum(plan.site("aws-use1").nodes.values()) + batch_gpu + SPARE_NODES_PER_GPU_POOL
    max_nodes = {it.name: it.max_nodes for it in site.instance_types}
    for it, n in by_type.items():
        assert max_nodes[it] is None or n <= max_nodes[it]
    pools = {p.name: p for p in node_pools(env, site, plan.site("aws-use1"))}
    for n in gpu_nodes:
        it = next(i for i in site.instance_types if i.name == n.labels[L.INSTANCE_TYPE])
        assert n.capacity[L.GPU_RESOURCE] == str(it.gpu.count)
        assert n.capacity["cpu"] == str(it.vcpus) and _qty(n.capacity["memory"]) == it.memory_gib * 1024
        assert n.labels[L.GPU_PRODUCT] == L.gpu_product(it.gpu.type)
        assert n.labels[L.ZONE] in site.zones and n.labels[L.REGION] == site.region
        pool = pools[n.labels["karpenter.sh/nodepool"]]
        assert {k: v for k, v in n.labels.items() if k in pool.labels} == pool.labels   # same as Karpenter's
        assert {(t.key, t.value, t.effect) for t in n.taints} == set(pool.taints)
        assert any(t.key == L.GPU_TAINT_KEY and t.effect == "NoSchedule" for t in n.taints)
    # both zones are used
    assert {n.labels[L.ZONE] for n in gpu_nodes} == set(site.zones)


def test_cloud_site_has_an_untainted_system_pool(local):
    env, _, clusters = local
    site = env.site("aws-use1")
    system = [n for n in clusters["hybridml-aws-use1"].nodes if n.labels["karpenter.sh/nodepool"] == "system"]
    assert len(system) == SYSTEM_NODES
    assert system_instance_type(site).name == "m7i.2xlarge"      # the only CPU type of the local spec
    for n in system:
        assert not n.taints and L.GPU_RESOURCE not in n.capacity and L.GPU_PRODUCT not in n.labels
        assert n.labels[L.PRIVACY_ZONE] == "internal" and n.labels[L.SITE_KIND] == "cloud"


def test_datacenter_nodes_are_the_inventory_hosts(local):
    env, _, clusters = local
    site = env.site("dc-local")
    assert isinstance(site, Datacenter)
    inv = build_inventory(env, "dc-local")
    nodes = {n.name: n for n in clusters["hybridml-dc-local"].nodes}
    assert list(nodes) == inv.host_names
    for h in inv.hosts:
        n = nodes[h.name]
        assert {k: n.labels[k] for k in h.labels} == h.labels        # datacenter, rack, zone, privacy zone
        assert n.labels[L.SITE_KIND] == "datacenter"
        assert sorted(f"{t.key}={t.value}:{t.effect}" for t in n.taints) == sorted(h.taints)
        assert L.GPU_RESOURCE not in n.capacity
        reserved = h.vars["kubernetes_node_system_reserved"]
        assert _qty(n.capacity["cpu"]) == pytest.approx(h.cores - _qty(reserved["cpu"]))
    pii = [n for n in nodes.values() if n.labels[L.PRIVACY_ZONE] == "pii"]
    assert [n.name for n in pii] == ["r2-h01", "r2-h02", "r2-h03"]
    assert all([(t.key, t.value, t.effect) for t in n.taints] == [(L.PRIVACY_TAINT_KEY, "pii", "NoSchedule")]
               for n in pii)
    assert all(not n.taints for n in nodes.values() if n.labels[L.RACK] == "r1")


def test_site_filter_and_unknown_site(local):
    env, plan, _ = local
    assert [c.name for c in clusters_from_spec(env, plan, ["dc-local"])] == ["hybridml-dc-local"]
    with pytest.raises(ValueError, match="no site nope"):
        clusters_from_spec(env, plan, ["nope"])


def test_other_specs_gpu_datacenter_hosts_and_no_cpu_type(small_spec):
    """A datacenter host with GPUs advertises them (as the device plugin would) with the GPU product
    label (as GPU feature discovery would); a cloud site without CPU types still gets a system pool."""
    spec = small_spec
    spec["sites"][1]["racks"][0]["host_pools"][0]["gpu"] = {"type": "L4", "count": 2, "memory_gib": 24}
    spec["sites"][0]["instance_types"] = [it for it in spec["sites"][0]["instance_types"] if "gpu" in it]
    env = parse_environment(dump(spec))
    plan = solve(env)
    clusters = {c.name: c for c in clusters_from_spec(env, plan)}
    assert set(clusters) == {"hybridml-aws-use1", "hybridml-dc-ash", "hybridml-dc-ams"}
    gpu_hosts = [n for n in clusters["hybridml-dc-ash"].nodes if L.GPU_RESOURCE in n.capacity]
    assert [n.name for n in gpu_hosts] == ["ash-r1-h01", "ash-r1-h02"]
    assert all(n.capacity[L.GPU_RESOURCE] == "2" and n.labels[L.GPU_PRODUCT] == "NVIDIA-L4" for n in gpu_hosts)
    system = [n for n in clusters["hybridml-aws-use1"].nodes if n.labels["karpenter.sh/nodepool"] == "system"]
    assert len(system) == SYSTEM_NODES and all(n.labels[L.INSTANCE_TYPE] == "simulated.system" for n in system)
    h100 = [n for n in clusters["hybridml-aws-use1"].nodes if n.labels.get(L.GPU_PRODUCT) == L.gpu_product("H100")]
    assert len(h100) >= plan.site("aws-use1").nodes.get("p5.48xlarge", 0)


# --------------------------------------------------------------------------- every pod fits


def _tolerates(pod: dict, taint) -> bool:
    for t in pod.get("tolerations") or []:
        if t.get("effect") not in (None, "", taint.effect):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, "", taint.key):
            return True
        if t.get("key") == taint.key and (t.get("value") or "") == (taint.value or ""):
            return True
    return False


def _matches(pod: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    req = (((pod.get("affinity") or {}).get("nodeAffinity") or {})
           .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = req.get("nodeSelectorTerms") or []
    if not terms:
        return True

    def expr_ok(e):
        v = labels.get(e["key"])
        op = e["operator"]
        return {"In": lambda: v in e.get("values", []), "NotIn": lambda: v not in e.get("values", []),
                "Exists": lambda: v is not None, "DoesNotExist": lambda: v is None}[op]()

    return any(all(expr_ok(e) for e in t.get("matchExpressions") or []) for t in terms)


def _requests(pod: dict) -> dict[str, float]:
    out = Counter()
    for c in pod.get("containers") or []:
        req = (c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits") or {}
        out["cpu"] += _qty(req.get("cpu", "100m"))
        out["memory"] += _mem_mi(req.get("memory", "128Mi"))
        out[L.GPU_RESOURCE] += float(req.get(L.GPU_RESOURCE, 0))
    return out


def _schedule(clusters: dict[str, ClusterDef], pods: list[tuple[str, str, dict]]):
    """First fit, largest pods first. Returns {(site, pod name): node}, raising if one does not fit."""
    free = {c: {n.name: {"cpu": _qty(n.capacity["cpu"]), "memory": _mem_mi(n.capacity["memory"]),
                         L.GPU_RESOURCE: float(n.capacity.get(L.GPU_RESOURCE, 0)), "pods": float(n.capacity["pods"])}
                for n in cl.nodes} for c, cl in clusters.items()}
    nodes = {c: {n.name: n for n in cl.nodes} for c, cl in clusters.items()}
    placed = {}
    for cluster, name, pod in sorted(pods, key=lambda p: (-_requests(p[2])[L.GPU_RESOURCE], -_requests(p[2])["cpu"])):
        need = _requests(pod)
        for node_name, room in free[cluster].items():
            node = nodes[cluster][node_name]
            if not _matches(pod, node.labels) or not all(_tolerates(pod, t) for t in node.taints):
                continue
            if room["pods"] < 1 or any(room[k] + 1e-9 < need[k] for k in ("cpu", "memory", L.GPU_RESOURCE)):
                continue
            for k in ("cpu", "memory", L.GPU_RESOURCE):
                room[k] -= need[k]
            room["pods"] -= 1
            placed[(cluster, name)] = node
            break
        else:
            raise AssertionError(f"pod {name} on {cluster} fits no node: requests {dict(need)}, "
                                 f"selector {pod.get('nodeSelector')}, tolerations {pod.get('tolerations')}")
    return placed


@pytest.fixture(scope="module")
def rendered_pods():
    """Every pod the serving stack creates on the local clusters, from the real program under mocks."""
    from hybridml.ops.preview import run_preview

    result = run_preview(LOCAL_SPEC, mode="local")
    assert result.workloads_deployed
    pods = []
    for site, objs in result.kubernetes_objects().items():
        for r in objs:
            props = r.props
            kind = props.get("kind")
            if kind in ("Deployment", "StatefulSet"):
                for i in range(int(props["spec"].get("replicas", 1))):
                    pods.append((cluster_name(site), f"{props['metadata']['name']}-{i}",
                                 props["spec"]["template"]["spec"]))
            elif kind == "Job":
                pods.append((cluster_name(site), props["metadata"]["name"], props["spec"]["template"]["spec"]))
    return pods


def test_every_rendered_pod_fits_with_gpu_and_privacy_isolation(local, rendered_pods):
    env, _, clusters = local
    assert len(rendered_pods) >= 10
    placed = _schedule(clusters, rendered_pods)
    gpu_pods = [(c, n) for c, n, p in rendered_pods if _requests(p)[L.GPU_RESOURCE] > 0]
    assert gpu_pods, "the local spec has GPU pipelines"
    for key in gpu_pods:
        node = placed[key]
        assert key[0] == "hybridml-aws-use1" and L.GPU_RESOURCE in node.capacity
    for c, n, p in rendered_pods:
        node = placed[(c, n)]
        if _requests(p)[L.GPU_RESOURCE] == 0:
            assert L.GPU_RESOURCE not in node.capacity, f"{n} (no GPU) landed on GPU node {node.name}"
        zones = {v for t in (p.get("tolerations") or []) if t.get("key") == L.PRIVACY_TAINT_KEY
                 for v in [t.get("value")]}
        if node.labels.get(L.PRIVACY_ZONE) in ("pii", "restricted"):
            assert node.labels[L.PRIVACY_ZONE] in zones
            assert node.labels[L.SITE_KIND] == "datacenter"


def test_the_planned_nodes_alone_fit_the_stack_spares_are_headroom(local, rendered_pods):
    """The spare GPU node is headroom, not needed for the planned pods: without it they still fit."""
    env, plan, clusters = local
    trimmed = dict(clusters)
    cloud = clusters["hybridml-aws-use1"]
    planned = Counter(plan.site("aws-use1").nodes) + Counter(batch_nodes_at(plan, "aws-use1"))
    keep, seen = [], Counter()
    for n in cloud.nodes:
        it = n.labels[L.INSTANCE_TYPE]
        if L.GPU_RESOURCE in n.capacity:
            seen[it] += 1
            if seen[it] > planned[it]:
                continue
        keep.append(n)
    assert len(keep) == len(cloud.nodes) - SPARE_NODES_PER_GPU_POOL
    trimmed["hybridml-aws-use1"] = ClusterDef(cloud.name, keep)
    _schedule(trimmed, rendered_pods)
