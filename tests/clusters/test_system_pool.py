"""Room to run (issue 19): every cloud site's platform pods — add-ons, operators, gateway proxies, monitoring, the
data stores the plan puts there — have untainted CPU nodes sized for them (clusters.sizing.system_pool).

The pure part checks the sizing itself; the rest takes what the program renders for dev's and prod's cloud sites
(the preview under mocks) and packs every CPU pod, per resource, by first-fit decreasing onto the node shapes the
cluster gets: the platform onto the system node group without its spare node, and everything (the CPU pipelines
too) onto that group plus the CPU nodes the plan buys.
"""
from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusters import sizing
from clusters.sizing import PlatformPod
from infra import labels as L
from infra.errors import SpecError
from infra.kube import quantity_value
from infra.loader import load_environment, parse_environment
from infra.versions import OPERATORS
from policies.placement import solve
from policies.placement.candidates import CLOUD_ALLOCATABLE
from tests.conftest import SMALL_SPEC, dump
from tests.pulumi_mocks import of_type, preview
from workloads.render import meta

# Kinds the program writes that make no pod of their own (the pods of their controllers are counted per release).
NO_PODS = frozenset({
    "Namespace", "PriorityClass", "StorageClass", "ResourceQuota", "LimitRange", "EC2NodeClass", "NodePool", "ConfigMap",
    "Secret", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Service", "NetworkPolicy",
    "PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject", "TriggerAuthentication", "ServingRuntime",
    "ClusterServingRuntime", "ServiceMonitor", "PodMonitor", "PrometheusRule", "GatewayClass", "Gateway", "HTTPRoute",
    "GRPCRoute", "ReferenceGrant", "BackendTLSPolicy", "ClientTrafficPolicy", "BackendTrafficPolicy", "SecurityPolicy",
    "EnvoyPatchPolicy", "Backend", "AIServiceBackend", "AIGatewayRoute", "BackendSecurityPolicy", "QuotaPolicy",
    "GatewayConfig", "InferencePool", "Certificate", "Issuer", "ClusterIssuer", "DNSEndpoint", "IngressClassParams",
    "PersistentVolumeClaim", "CustomResourceDefinition", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
})
# Batch kinds: their pods run on the nodes the batch stage buys or the datacenter headroom it uses
# (policies/placement/batch.py, tests/placement/test_batch.py), never on the system node group.
BATCH_KINDS = frozenset({"RayJob", "RayCluster", "CronJob"})
EKS_ADDON_PODS = {"coredns": "coredns", "aws-ebs-csi-driver": "ebs-csi-controller",   # add-on -> its controller row
                  "aws-efs-csi-driver": "efs-csi-controller"}
EKS_DAEMONSET_ADDONS = {"vpc-cni", "kube-proxy", "eks-pod-identity-agent"}           # DaemonSets only (per node)


# --------------------------------------------------------------------------- pure sizing


def _tiny():
    env = parse_environment(dump(copy.deepcopy(SMALL_SPEC)))
    plan = solve(env)
    return env, plan


def test_a_gpu_only_site_gets_nodes_for_its_proxies_controllers_and_monitoring():
    env, plan = _tiny()
    site, sp = env.site("aws-use1"), plan.site("aws-use1")
    assert not sp.data and all(env.pipeline(p).gpu for p in sp.pipelines)   # GPU-only: no CPU pool of the plan
    pool = sizing.system_pool_plan(env, site, sp)
    names = {p.name for p in pool.pods}
    assert {"envoy-proxy", "karpenter", "coredns", "prometheus", "envoy-gateway", "gpu-operator"} <= names
    cpu, mem, slots = pool.room
    proxy = next(p for p in pool.pods if p.name == "envoy-proxy")
    assert proxy.replicas == 4 and proxy.cpu >= 2 and cpu >= proxy.cpu    # 2 x 2-CPU proxies per Gateway, fleet + public
    assert pool.instance_type != "m7i.large"                              # 1.55 cores for pods: no proxy fits there
    packed = sizing.first_fit_decreasing(pool.pods, pool.room)
    assert packed is not None and len(packed) == pool.packed_nodes
    assert pool.nodes == max(sizing.MIN_SYSTEM_NODES, pool.packed_nodes) + sizing.SPARE_SYSTEM_NODES
    assert pool.max_nodes == pool.nodes + 1
    assert pool.nodes * cpu >= pool.requested[0] and pool.nodes * mem >= pool.requested[1]
    assert pool.labels == {L.NODE_ROLE: "system", L.SITE: "aws-use1", L.SITE_KIND: "cloud", L.PRIVACY_ZONE: "internal"}


def test_the_cheapest_shape_that_holds_the_platform_is_chosen():
    env, plan = _tiny()
    site, sp = env.site("aws-use1"), plan.site("aws-use1")
    chosen = sizing.system_pool_plan(env, site, sp)
    for shape in sizing.SYSTEM_SHAPES:
        packed = sizing.first_fit_decreasing(chosen.pods, sizing.node_room(shape.vcpus, shape.memory_gib, shape.max_pods))
        if packed is not None:
            cost = (max(sizing.MIN_SYSTEM_NODES, len(packed)) + sizing.SPARE_SYSTEM_NODES) * shape.hourly_usd
            assert cost >= chosen.hourly_usd - 1e-9, shape


def test_data_stores_placed_at_a_site_grow_its_system_pool():
    env, plan = _tiny()
    site, sp = env.site("aws-use1"), plan.site("aws-use1")
    without = sizing.system_pool_plan(env, site, sp)
    view = env.feature_views[0]
    with_data = sizing.system_pool_plan(env, site, sp.model_copy(update={"data": [f"feature_view:{view.name}"]}))
    redis = next(p for p in with_data.pods if p.name == f"redis-{view.name}")
    assert redis.replicas == 2 and redis.memory_gib >= view.online_memory_gib * 1.25 + 0.25
    assert with_data.requested[1] - without.requested[1] >= 2 * view.online_memory_gib * 1.25
    assert with_data.nodes * with_data.room[1] >= with_data.requested[1]


def test_a_platform_pod_no_system_shape_holds_is_a_spec_error():
    env, plan = _tiny()
    site = env.site("aws-use1")
    with pytest.raises(SpecError, match="redis-huge .* fits no system node type"):
        sizing.system_pool(site, sizing.node_pools(env, site, plan.site("aws-use1")), [PlatformPod("redis-huge", 2, 400)])


def test_every_operator_and_release_has_sized_pods():
    """An operator added to infra/versions.py needs its pods sized here, or its controller may find no node."""
    assert set(OPERATORS) <= set(sizing.CONTROLLER_PODS), set(OPERATORS) - set(sizing.CONTROLLER_PODS)


_pods = st.lists(st.builds(PlatformPod, name=st.sampled_from(["a", "b", "c", "d"]), cpu=st.sampled_from([0.05, 0.5, 1.0, 2.3, 3.3]),
                           memory_gib=st.sampled_from([0.1, 1.0, 4.0, 13.0]), replicas=st.integers(1, 4),
                           one_per_node=st.booleans()), max_size=8)


@settings(max_examples=80, deadline=None)
@given(pods=_pods, shape=st.sampled_from(sizing.SYSTEM_SHAPES[:4]))
def test_first_fit_decreasing_places_every_pod_within_each_nodes_room(pods, shape):
    # names unique per kind, as the sizing uses them
    pods = list({p.name: p for p in pods}.values())
    room = sizing.node_room(shape.vcpus, shape.memory_gib, shape.max_pods)
    packed = sizing.first_fit_decreasing(pods, room)
    if any(p.cpu > room[0] or p.memory_gib > room[1] for p in pods):
        assert packed is None
        return
    assert packed is not None
    by_name = {p.name: p for p in pods}
    assert sorted(n for node in packed for n in node) == sorted(p.name for p in pods for _ in range(p.replicas))
    for node in packed:
        assert sum(by_name[n].cpu for n in node) <= room[0] + 1e-9
        assert sum(by_name[n].memory_gib for n in node) <= room[1] + 1e-9
        assert len(node) <= room[2]
        assert all(node.count(n) == 1 for n in node if by_name[n].one_per_node)


# --------------------------------------------------------------------------- against the rendered program


def _flink_gib(value) -> float:
    """Flink memory sizes ("2048m" is 2048 MiB, "4g" 4 GiB), or a Kubernetes quantity."""
    text = str(value).strip().lower()
    units = {"m": 1 / 1024, "mb": 1 / 1024, "g": 1.0, "gb": 1.0}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "").isdigit():
            return float(text[: -len(unit)]) * units[unit]
    return quantity_value(value) / 2 ** 30


def _req(resources: dict | None) -> tuple[float, float, float]:
    r = (resources or {}).get("requests") or (resources or {}).get("limits") or {}
    return (quantity_value(r.get("cpu", 0)), quantity_value(r.get("memory", 0)) / 2 ** 30, quantity_value(r.get(L.GPU_RESOURCE, 0)))


def _pod_need(spec: dict) -> tuple[float, float, float]:
    cs = [_req(c.get("resources")) for c in spec.get("containers") or []]
    need = tuple(sum(c[i] for c in cs) for i in range(3))
    for c in spec.get("initContainers") or []:
        need = tuple(max(a, b) for a, b in zip(need, _req(c.get("resources")), strict=True))
    return need   # type: ignore[return-value]


def rendered_pods(m: dict) -> list[tuple[str, tuple[float, float, float], int, dict, dict]]:
    """(name, (cores, GiB, GPUs) per pod, pods, pod labels, pod spec for scheduling) of one rendered object."""
    kind, spec, name = m["kind"], m.get("spec") or {}, f"{m['kind']}/{m['metadata']['name']}"
    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        t = spec["template"]
        return [(name, _pod_need(t["spec"]), spec.get("replicas", 1), t["metadata"].get("labels") or {}, t["spec"])]
    if kind == "Job":
        t = spec["template"]
        return [(name, _pod_need(t["spec"]), spec.get("parallelism", 1), t["metadata"].get("labels") or {}, t["spec"])]
    if kind == "CronJob":
        t = spec["jobTemplate"]["spec"]["template"]
        return [(name, _pod_need(t["spec"]), 1, t["metadata"].get("labels") or {}, t["spec"])]
    if kind == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        return [(f"{name}/leader", _pod_need(lwt["leaderTemplate"]["spec"]), spec["replicas"], {}, lwt["leaderTemplate"]["spec"]),
                (f"{name}/worker", _pod_need(lwt["workerTemplate"]["spec"]), spec["replicas"] * (lwt["size"] - 1), {},
                 lwt["workerTemplate"]["spec"])]
    if kind == "InferenceService":
        pred = spec["predictor"]
        return [(name, _pod_need({"containers": [pred["model"]]}), pred.get("minReplicas", 1), m["metadata"].get("labels") or {}, pred)]
    if kind == "EnvoyProxy":
        d = spec["provider"]["kubernetes"]["envoyDeployment"]
        pod = d.get("pod") or {}
        cpu, mem, _ = _req(d["container"].get("resources"))
        return [(name, (cpu + sizing.PROXY_SIDECAR_CPU, mem + sizing.PROXY_SIDECAR_MEMORY_GIB, 0.0), d.get("replicas", 1),
                 pod.get("labels") or {}, pod)]
    if kind == "FeatureStore":
        server = spec["services"]["onlineStore"]["server"]
        return [(name, _req(server.get("resources")), 1, {}, spec["services"])]
    if kind == "FlinkDeployment":
        conf = spec.get("flinkConfiguration") or {}
        tms = math.ceil(spec["job"].get("parallelism", 1) / int(conf.get("taskmanager.numberOfTaskSlots", 1)))
        jm, tm = spec["jobManager"]["resource"], spec["taskManager"]["resource"]
        pod = spec.get("podTemplate", {}).get("spec") or {}
        return [(f"{name}/jobmanager", (float(jm["cpu"]), _flink_gib(jm["memory"]), 0.0), spec["jobManager"].get("replicas", 1), {}, pod),
                (f"{name}/taskmanager", (float(tm["cpu"]), _flink_gib(tm["memory"]), 0.0), tms, {}, pod)]
    if kind in ("Prometheus", "Alertmanager"):
        return [(name, _req(spec.get("resources")), spec.get("replicas", 1), {}, spec)]
    if kind in BATCH_KINDS:
        return []
    assert kind in NO_PODS, (f"{name}: a kind that may make pods; count its pods in rendered_pods and its room in "
                             f"clusters.sizing (platform_pods / data_store_pods)")
    return []


def _value_requests(values) -> list[tuple[float, float]]:
    """Every `requests` (cores, GiB) set anywhere in a Helm release's values."""
    out: list[tuple[float, float]] = []
    if isinstance(values, dict):
        req = values.get("requests")
        if isinstance(req, dict) and ("cpu" in req or "memory" in req):
            out.append((quantity_value(req.get("cpu", 0)), quantity_value(req.get("memory", 0)) / 2 ** 30))
        for v in values.values():
            out += _value_requests(v)
    elif isinstance(values, list):
        for v in values:
            out += _value_requests(v)
    return out


def _matches(spec: dict, node_labels: dict, taints: tuple = ()) -> bool:
    """Could a pod of `spec` land on a node of these labels and taints (nodeSelector, required node affinity,
    NoSchedule taints)?"""
    if any(node_labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
             or {}).get("nodeSelectorTerms")
    if terms:
        def term_ok(t: dict) -> bool:
            for e in t.get("matchExpressions") or []:
                v, op = node_labels.get(e["key"]), e["operator"]
                if (op == "In" and v not in e["values"]) or (op == "NotIn" and v in e["values"]) or \
                        (op == "Exists" and v is None) or (op == "DoesNotExist" and v is not None):
                    return False
            return True
        if not any(term_ok(t) for t in terms):
            return False
    tols = spec.get("tolerations") or []
    return all(any(t.get("operator") == "Exists" and t.get("key") in (None, key) or
                   (t.get("key") == key and t.get("value") == value) for t in tols) for key, value, _ in taints)


@pytest.fixture(scope="module", params=["dev", "prod"])
def rendered(request):
    env = load_environment(request.param)
    return request.param, env, solve(env), preview(request.param)


def _site_pods(result, env, site: str):
    """The site's CPU pods as PlatformPods (platform, pipelines) and the rendered specs of the platform's."""
    platform: list[PlatformPod] = []
    pipelines: list[PlatformPod] = []
    specs: list[tuple[str, dict, bool]] = []
    per_node = [0.0, 0.0]
    for m in result.kubernetes_manifests()[site]:
        for name, (cpu, mem, gpus), count, lbls, spec in rendered_pods(m):
            if gpus or not count:
                continue
            if m["kind"] == "DaemonSet":
                per_node = [per_node[0] + cpu, per_node[1] + mem]
                continue
            (pipelines if lbls.get(L.PIPELINE) else platform).append(PlatformPod(name, cpu, mem, count))
            specs.append((name, spec, bool(lbls.get(L.PIPELINE))))
    for r in of_type(result, "kubernetes:helm.sh/v3:Release", site):
        release = r.props["name"]
        assert release in sizing.CONTROLLER_PODS, f"{site}: Helm release {release} has no row in clusters.sizing.CONTROLLER_PODS"
        rows = sizing.CONTROLLER_PODS[release]
        values = r.props.get("values") or {}
        for cpu, mem in _value_requests(values):   # what the program's values request, the row holds
            assert any(p.cpu >= cpu - 1e-9 and p.memory_gib >= mem - 1e-9 for p in rows), (release, cpu, mem, rows)
        if rows:    # a release of CRDs only (kserve-crd) runs no pod
            assert values.get("replicas", 1) <= max(p.replicas for p in rows), (release, values.get("replicas"))
        platform += rows
    for a in of_type(result, "aws:eks/addon:Addon", site):
        addon = a.props["addonName"]
        assert addon in EKS_ADDON_PODS or addon in EKS_DAEMONSET_ADDONS, f"{site}: EKS add-on {addon} not sized"
        if addon in EKS_ADDON_PODS:
            platform += [p for p in sizing.CLUSTER_ADDONS if p.name == EKS_ADDON_PODS[addon]]
    return platform, pipelines, specs, per_node


def test_every_cpu_pod_of_a_cloud_site_fits_the_capacity_its_cluster_gets(rendered):
    env_name, env, plan, result = rendered
    checked = 0
    for site in env.cloud_sites:
        sp = plan.site(site.name)
        if site.name not in result.sites or not (sp.pipelines or sp.data):
            continue
        system = sizing.system_pool_plan(env, site, sp)
        platform, pipelines, specs, per_node = _site_pods(result, env, site.name)
        cpu, mem, slots = system.room
        room = (cpu - per_node[0], mem - per_node[1], slots)

        # the program builds the node group the sizing planned
        (group,) = of_type(result, "aws:eks/nodeGroup:NodeGroup", site.name)
        assert group.props["instanceTypes"] == [system.instance_type]
        assert group.props["scalingConfig"]["minSize"] == group.props["scalingConfig"]["desiredSize"] == system.nodes
        assert group.props["labels"] == system.labels

        # every rendered platform pod may land on a system node (selectors, required affinity; the group is untainted),
        # a CPU pipeline's there or on the plan's CPU pool
        pools = sizing.node_pools(env, site, sp)
        cpu_pools = [p for p in pools if p.gpu_type is None]
        stuck = [name for name, spec, pipeline in specs if not _matches(spec, system.labels)
                 and not (pipeline and any(_matches(spec, p.labels, p.taints) for p in cpu_pools))]
        assert not stuck, f"{env_name}/{site.name}: CPU pods no system (or CPU pool) node can take: {stuck}"

        # per resource, first-fit decreasing: the platform fits the system nodes without the spare
        packed = sizing.first_fit_decreasing(platform, room)
        assert packed is not None, f"{env_name}/{site.name}: a platform pod is larger than a {system.instance_type}"
        assert len(packed) <= system.nodes - sizing.SPARE_SYSTEM_NODES, (
            f"{env_name}/{site.name}: the rendered platform needs {len(packed)} {system.instance_type} nodes; "
            f"the system node group has {system.nodes} (spare included)")

        # ... and with the CPU pipelines, every CPU pod fits the system nodes plus the CPU nodes the plan buys
        cpu_types = {it.name: it for it in site.instance_types if it.gpu is None}
        nodes = [list(room) for _ in range(system.nodes)]
        for pool in cpu_pools:
            for t in pool.instance_types:
                it = cpu_types[t]
                nodes += [[it.vcpus * CLOUD_ALLOCATABLE - per_node[0], it.memory_gib * CLOUD_ALLOCATABLE - per_node[1], 110]
                          for _ in range(sp.nodes.get(t, 0))]
        every = sorted((p for p in platform + pipelines for _ in range(p.replicas)),
                       key=lambda p: -max(p.cpu / room[0], p.memory_gib / room[1]))
        for p in every:
            node = next((n for n in nodes if n[0] >= p.cpu - 1e-9 and n[1] >= p.memory_gib - 1e-9 and n[2] >= 1), None)
            assert node is not None, f"{env_name}/{site.name}: {p.name} ({p.cpu:g} cores, {p.memory_gib:g} GiB) finds no CPU node"
            node[0] -= p.cpu
            node[1] -= p.memory_gib
            node[2] -= 1
        print(f"{env_name}/{site.name}: {sum(p.replicas for p in platform)} platform pods "
              f"({sum(p.cpu * p.replicas for p in platform):.1f} cores, {sum(p.memory_gib * p.replicas for p in platform):.0f} GiB) "
              f"on {len(packed)} of {system.nodes} {system.instance_type}; {sum(p.replicas for p in pipelines)} CPU pipeline pods")
        checked += 1
    assert checked, f"{env_name}: no cloud site checked"


def test_data_store_pods_sized_are_the_rendered_ones(rendered):
    """clusters.sizing mirrors workloads' data stores: the same pods, request for request."""
    env_name, env, plan, result = rendered
    for site in env.cloud_sites:
        sp = plan.site(site.name)
        if site.name not in result.sites or not sp.data:
            continue
        sized = sorted((round(p.cpu, 3), round(p.memory_gib, 3)) for p in sizing.data_store_pods(env, sp) for _ in range(p.replicas))
        got = []
        for m in result.kubernetes_manifests()[site.name]:
            lbls = m["metadata"].get("labels") or {}
            if lbls.get(meta.FEATURE_VIEW) or lbls.get(meta.COLLECTION):
                got += [(round(c, 3), round(g, 3)) for _, (c, g, _), n, _, _ in rendered_pods(m) for _ in range(n)]
        assert sorted(got) == sized, env_name
