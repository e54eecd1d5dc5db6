"""Pure planners for the cluster components: subnets, Karpenter node pools, namespace quotas, the system node group.

No Pulumi imports: every number a component turns into a resource is decided here, from the
spec and the placement plan, and tested directly (tests/clusters/test_sizing.py). Components
only map these plans onto resources (validate -> plan -> create, like awsx's VPC).
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

from infra import labels
from infra.errors import SpecError, SpecIssue
from infra.spec import CloudSite, Datacenter, Environment, InstanceType, PrivacyTier
from infra.versions import OPERATORS
from policies.placement.candidates import CLOUD_ALLOCATABLE
from policies.placement.plan import PlacementPlan, SitePlan

# Karpenter may grow a pool beyond the planned nodes by the pipelines' autoscaling factor,
# but never below this much room: a rolling update of the largest replica needs one spare node.
MIN_SPARE_NODES = 1
# Default root volume for GPU nodes: container images of LLM servers are 10-20 GiB and models are
# cached on local disk, so the 20 GiB default of the EKS AMIs is far too small.
GPU_ROOT_VOLUME_GIB = 300
CPU_ROOT_VOLUME_GIB = 100
# Per serving replica, room for what runs next to the model server (metrics/proxy sidecars).
SIDECAR_CPU = 0.25
SIDECAR_MEMORY_GIB = 0.5
SENTINEL_CPU, SENTINEL_MEMORY_GIB = 0.05, 0.0625   # per Sentinel container (workloads/render/feature_store.py)
# A batch pipeline's pods beside its workers and head: the job submitter and the autoscaler (workloads/render/ray.py).
BATCH_SIDECAR_CPU, BATCH_SIDECAR_MEMORY_GIB = 0.5, 1.0
# Quota floor of a tier namespace that the plan leaves empty: debugging pods and jobs still fit.
QUOTA_FLOOR_CPU = 2.0
QUOTA_FLOOR_MEMORY_GIB = 4.0
QUOTA_FLOOR_PODS = 10


# --------------------------------------------------------------------------- subnets


@dataclass(frozen=True)
class SubnetPlan:
    """The pair of subnets of one availability zone."""

    zone: str
    private_cidr: str   # nodes and pods (VPC CNI gives pods VPC addresses, so these are large)
    public_cidr: str    # only the NAT gateway lives here; nothing maps public IPs on launch


def subnet_plan(site: CloudSite) -> list[SubnetPlan]:
    """Split the VPC: one large private subnet per zone, and the public NAT subnets in one spare block.

    With n zones the VPC is cut into 2^k >= n+1 equal blocks: blocks 0..n-1 are the private
    subnets, the last block is cut again into one small public subnet per zone. A /16 over
    three zones gives three /18 private subnets (16k addresses each: room for pods) and /20
    public ones. Raises SpecError when the VPC is too small for that split.
    """
    vpc = ipaddress.ip_network(site.vpc_cidr)
    n = len(site.zones)
    k = max(1, math.ceil(math.log2(n + 1)))
    private_prefix = vpc.prefixlen + k
    public_prefix = private_prefix + max(1, math.ceil(math.log2(n)))
    if public_prefix > 28 or private_prefix > 24:
        raise SpecError(None, [SpecIssue(
            ("sites", site.name, "vpc_cidr"),
            f"VPC {site.vpc_cidr} is too small for {n} zones (private subnets would be /{private_prefix}, "
            f"public /{public_prefix}); use a /20 or larger, e.g. 10.0.0.0/16")])
    blocks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(vpc.subnets(new_prefix=private_prefix))
    public_block = blocks[-1]
    publics = list(public_block.subnets(new_prefix=public_prefix))
    return [SubnetPlan(zone=z, private_cidr=str(blocks[i]), public_cidr=str(publics[i]))
            for i, z in enumerate(site.zones)]


# --------------------------------------------------------------------------- Karpenter


@dataclass(frozen=True)
class NodePoolPlan:
    """One Karpenter NodePool + EC2NodeClass: one GPU type (or the CPU pool) at one site."""

    name: str                       # Kubernetes name: gpu-h100, gpu-l4, cpu
    gpu_type: str | None
    instance_types: tuple[str, ...]  # the types the plan chose for this pool
    capacity_types: tuple[str, ...]
    zones: tuple[str, ...]
    planned_nodes: int               # what the plan needs at peak
    max_nodes: int                   # Karpenter may grow to this (autoscaling + spare)
    limit_cpu: int                   # NodePool limits: sum over max_nodes of the chosen types
    limit_memory_gib: int
    limit_gpus: int
    volume_gib: int
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[tuple[str, str, str], ...] = ()   # (key, value, effect)


def site_privacy_zone(site: CloudSite | Datacenter) -> str:
    """The most sensitive tier a site may hold: what its nodes are labelled (and tainted) with."""
    tiers = site.allowed_tiers if isinstance(site, Datacenter) else site.privacy_tiers
    return max(tiers, key=lambda t: t.rank).value


def privacy_taints(zone: str) -> tuple[tuple[str, str, str], ...]:
    """pii/restricted nodes only take pods that tolerate their zone (same rule as the Ansible inventory)."""
    if PrivacyTier(zone).is_sensitive:
        return ((labels.PRIVACY_TAINT_KEY, zone, "NoSchedule"),)
    return ()


def _growth_factor(env: Environment, site_plan: SitePlan, gpu_type: str | None) -> float:
    """Largest autoscaling factor among the pipelines this pool serves at the site."""
    factors = []
    for name in site_plan.pipelines:
        p = env.pipeline(name)
        uses = p.gpu.type if p.gpu else None
        if uses == gpu_type:
            factors.append(p.autoscaling.max_replicas_factor)
    return max(factors, default=1.0)


def node_pools(env: Environment, site: CloudSite, site_plan: SitePlan,
               batch_nodes: dict[str, int] | None = None) -> list[NodePoolPlan]:
    """Karpenter pools for one cloud site: one per GPU type the plan uses there, plus CPU if planned.

    Limits: each chosen instance type may grow from its planned count by the pipelines'
    autoscaling factor (+1 spare node for rolling updates), capped by the type's `max_nodes`;
    the pool's vCPU limit is then capped by its share of the family's vCPU quota (pools of
    one family share the quota in proportion to their planned vCPUs), never below the plan.
    `batch_nodes` (instance type -> nodes, `batch_nodes_at`): what the batch stage buys while runs go, added
    on top (planned and limit alike).
    """
    by_name = {it.name: it for it in site.instance_types}
    extra = {n: c for n, c in (batch_nodes or {}).items() if c > 0}
    groups: dict[str | None, list[tuple[InstanceType, int]]] = {}
    for it_name in sorted(set(site_plan.nodes) | set(extra)):
        count = site_plan.nodes.get(it_name, 0)
        if count <= 0 and it_name not in extra:
            continue
        it = by_name[it_name]
        groups.setdefault(it.gpu.type if it.gpu else None, []).append((it, count))

    grown: dict[str | None, list[tuple[InstanceType, int, int]]] = {}
    for gpu_type, members in groups.items():
        factor = _growth_factor(env, site_plan, gpu_type)
        rows = []
        for it, count in members:
            cap = it.max_nodes if it.max_nodes is not None else math.inf
            grow = int(min(cap, max(math.ceil(count * factor), count + MIN_SPARE_NODES))) if count else 0
            more = extra.get(it.name, 0)
            rows.append((it, count + more, grow + more))
        grown[gpu_type] = rows

    # vCPU quota share per pool (family quotas are shared by every pool with types of that family)
    planned_family: dict[str, int] = {}
    for rows in grown.values():
        for it, count, _ in rows:
            planned_family[it.quota_family] = planned_family.get(it.quota_family, 0) + count * it.vcpus

    zone = site_privacy_zone(site)
    pools = []
    for gpu_type, rows in sorted(grown.items(), key=lambda kv: (kv[0] is None, kv[0] or "")):
        planned_vcpus = sum(count * it.vcpus for it, count, _ in rows)
        max_vcpus = sum(mx * it.vcpus for it, _, mx in rows)
        quota_cap = 0.0
        for family in {it.quota_family for it, _, _ in rows}:
            quota = site.vcpu_quotas.get(family)  # type: ignore[call-overload]
            fam_planned = sum(count * it.vcpus for it, count, _ in rows if it.quota_family == family)
            if quota is None:
                quota_cap = math.inf
                break
            quota_cap += quota * fam_planned / planned_family[family]
        limit_cpu = int(max(planned_vcpus, min(max_vcpus, math.floor(quota_cap))))
        # scale nodes/memory/GPUs down with the vCPU cap so every limit describes the same fleet
        scale = limit_cpu / max_vcpus if max_vcpus else 1.0
        max_nodes = max(sum(c for _, c, _ in rows), math.floor(sum(mx for _, _, mx in rows) * scale))
        memory = max(sum(c * it.memory_gib for it, c, _ in rows), sum(mx * it.memory_gib for it, _, mx in rows) * scale)
        gpus = max(sum(c * it.gpu.count for it, c, _ in rows if it.gpu),
                   math.floor(sum(mx * it.gpu.count for it, _, mx in rows if it.gpu) * scale))
        capacity = sorted({ct for it, _, _ in rows for ct in it.capacity_types})
        pool_labels = {labels.SITE: site.name, labels.SITE_KIND: "cloud", labels.PRIVACY_ZONE: zone}
        taints = privacy_taints(zone)
        if gpu_type:
            # Declared on the pool so Karpenter provisions for pods selecting the GPU product before
            # GPU feature discovery has run on the new node (GFD later sets the same value).
            pool_labels[labels.GPU_PRODUCT] = labels.gpu_product(gpu_type)
            taints = ((labels.GPU_TAINT_KEY, "true", "NoSchedule"),) + taints
        pools.append(NodePoolPlan(
            name=f"gpu-{gpu_type.lower()}" if gpu_type else "cpu",
            gpu_type=gpu_type,
            instance_types=tuple(it.name for it, _, _ in rows),
            capacity_types=tuple(capacity),
            zones=tuple(site.zones),
            planned_nodes=sum(c for _, c, _ in rows),
            max_nodes=int(max_nodes),
            limit_cpu=limit_cpu,
            limit_memory_gib=int(math.ceil(memory)),
            limit_gpus=int(gpus),
            volume_gib=GPU_ROOT_VOLUME_GIB if gpu_type else CPU_ROOT_VOLUME_GIB,
            labels=pool_labels,
            taints=taints,
        ))
    return pools


# --------------------------------------------------------------------------- namespaces and quotas


@dataclass(frozen=True)
class QuotaPlan:
    """ResourceQuota of one tier namespace at one site (requests only: limits are not required of pods)."""

    namespace: str
    tier: str
    cpu: float
    memory_gib: float
    gpus: int
    pods: int
    pipelines: tuple[str, ...] = ()

    def hard(self) -> dict[str, str]:
        out = {"requests.cpu": _cpu(self.cpu), "requests.memory": f"{int(math.ceil(self.memory_gib))}Gi",
               "pods": str(self.pods)}
        # Always present, 0 where the plan puts no GPU work: a tier namespace cannot grab GPUs unplanned.
        out[f"requests.{labels.GPU_RESOURCE}"] = str(self.gpus)
        return out


def _cpu(cores: float) -> str:
    milli = int(math.ceil(cores * 1000))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def site_tiers(site: CloudSite | Datacenter) -> list[PrivacyTier]:
    tiers = site.allowed_tiers if isinstance(site, Datacenter) else site.privacy_tiers
    return sorted(set(tiers), key=lambda t: t.rank)


def pods_per_replica(env: Environment, pipeline_name: str, site: CloudSite | Datacenter) -> int:
    """A vLLM replica wider than one node runs as a LeaderWorkerSet group: one pod per node."""
    p = env.pipeline(pipeline_name)
    if p.engine.kind != "vllm" or not p.gpu:
        return 1
    per_node = 0
    if isinstance(site, CloudSite):
        per_node = max((it.gpu.count for it in site.instance_types if it.gpu and it.gpu.type == p.gpu.type), default=0)
    else:
        per_node = max((h.gpu.count for _, h in site.all_hosts() if h.gpu and h.gpu.type == p.gpu.type), default=0)
    return max(1, p.engine.pipeline_parallel, math.ceil(p.gpu.count / per_node) if per_node else 1)


def namespace_quotas(env: Environment, plan: PlacementPlan, site_name: str) -> list[QuotaPlan]:
    """Quota per tier namespace: room for every planned replica at its autoscaling maximum.

    Per pipeline placed at the site: (replicas x autoscaling factor, rounded up, + 1 surge
    replica for rolling updates) x (its requests + sidecar allowance); plus the data stores
    (feature views, collections) the plan puts there, in the namespace of their tier.
    """
    site = env.site(site_name)
    site_plan = plan.site(site_name)
    rows: dict[str, dict] = {t.value: {"cpu": 0.0, "mem": 0.0, "gpus": 0, "pods": 0, "pipelines": []}
                             for t in site_tiers(site)}
    for name, replicas in sorted(site_plan.pipelines.items()):
        p = env.pipeline(name)
        row = rows.setdefault(p.privacy_tier.value, {"cpu": 0.0, "mem": 0.0, "gpus": 0, "pods": 0, "pipelines": []})
        peak = math.ceil(replicas * p.autoscaling.max_replicas_factor) + 1
        pods = peak * pods_per_replica(env, name, site)
        row["cpu"] += peak * p.resources.cpu + pods * SIDECAR_CPU
        row["mem"] += peak * p.resources.memory_gib + pods * SIDECAR_MEMORY_GIB
        row["gpus"] += peak * (p.gpu.count if p.gpu else 0)
        row["pods"] += pods
        row["pipelines"].append(name)
    for placement, share in (plan.batch.at(site_name) if plan.batch else []):
        # = workloads/render/ray.py: the workers, the head (with the autoscaler of a recurring one), a submitter
        b = env.batch.pipeline(placement.name)
        row = rows.setdefault(b.privacy_tier, {"cpu": 0.0, "mem": 0.0, "gpus": 0, "pods": 0, "pipelines": []})
        row["cpu"] += share.workers * b.resources.cpu + b.head.cpu + 2 * BATCH_SIDECAR_CPU
        row["mem"] += share.workers * b.resources.memory_gib + b.head.memory_gib + 2 * BATCH_SIDECAR_MEMORY_GIB
        row["gpus"] += share.workers * (b.resources.gpu.count if b.resources.gpu else 0)
        row["pods"] += share.workers + 2
    for d in plan.data:
        if site_name not in d.sites:
            continue
        if d.kind == "feature_view":
            fv = next(f for f in env.feature_views if f.name == d.name)
            cpu, mem, n = fv.online_cpu, fv.online_memory_gib * 1.25 + 0.25, 2  # = workloads' Redis: 2 replicas
        else:
            c = next(c for c in env.collections if c.name == d.name)
            cpu, mem, n = c.cpu, c.memory_gib, c.replication_factor
        row = rows.setdefault(d.privacy_tier, {"cpu": 0.0, "mem": 0.0, "gpus": 0, "pods": 0, "pipelines": []})
        row["cpu"] += n * (cpu + SIDECAR_CPU)
        row["mem"] += n * (mem + SIDECAR_MEMORY_GIB)
        row["pods"] += n + 1
        if d.kind == "feature_view":   # = workloads' Sentinel: one beside each Redis pod and a third pod of its own
            row["cpu"] += 3 * SENTINEL_CPU
            row["mem"] += 3 * SENTINEL_MEMORY_GIB
            row["pods"] += 1
    out = []
    for tier, row in sorted(rows.items(), key=lambda kv: PrivacyTier(kv[0]).rank):
        out.append(QuotaPlan(
            namespace=labels.namespace_for(tier), tier=tier,
            cpu=round(max(QUOTA_FLOOR_CPU, row["cpu"]), 3),
            memory_gib=max(QUOTA_FLOOR_MEMORY_GIB, row["mem"]),
            gpus=row["gpus"],
            pods=max(QUOTA_FLOOR_PODS, row["pods"] + 5),
            pipelines=tuple(row["pipelines"])))
    return out


# --------------------------------------------------------------------------- the system node group of a cloud site
#
# What runs on a cloud site's untainted CPU nodes outside the plan's node counts: the cluster add-ons, every
# operator whose kinds the program writes (installed by the program or, on clusters it does not own, by the
# platform: either way their pods run here), the gateway's Envoy proxies and rate limiter, monitoring, and the
# data stores the plan puts at the site as workloads renders them (Redis pair + Sentinels + Feast server + Flink,
# Qdrant replicas). GPU nodes are tainted, so none of it can land there. The numbers mirror what the program
# renders (workloads/render) or sets (Helm values), or, for charts whose defaults apply, those defaults;
# tests/clusters/test_system_pool.py checks them against the rendered pods of dev and prod.


@dataclass(frozen=True)
class PlatformPod:
    """`replicas` identical pods of one platform component, by their requests."""

    name: str
    cpu: float
    memory_gib: float
    replicas: int = 1
    one_per_node: bool = False      # required pod anti-affinity by hostname (Karpenter's chart)


@dataclass(frozen=True)
class SystemShape:
    """An instance type the system node group may use: EKS's max pods (VPC CNI) and its us-east-1 list price
    (only the ranking between shapes matters, and it is the same in every region)."""

    instance_type: str
    vcpus: int
    memory_gib: float
    max_pods: int
    hourly_usd: float


SYSTEM_SHAPES = (
    SystemShape("m7i.large", 2, 8, 29, 0.1008), SystemShape("m7i.xlarge", 4, 16, 58, 0.2016),
    SystemShape("m7i.2xlarge", 8, 32, 58, 0.4032), SystemShape("m7i.4xlarge", 16, 64, 234, 0.8064),
    SystemShape("m7i.8xlarge", 32, 128, 234, 1.6128), SystemShape("r7i.xlarge", 4, 32, 58, 0.2646),
    SystemShape("r7i.2xlarge", 8, 64, 58, 0.5292), SystemShape("r7i.4xlarge", 16, 128, 234, 1.0584),
    SystemShape("r7i.8xlarge", 32, 256, 234, 2.1168),
)
MIN_SYSTEM_NODES = 2        # Karpenter's two replicas on two nodes; never one node for the whole platform
SPARE_SYSTEM_NODES = 1      # headroom: a node can drain (AMI update) or fail with every platform pod rescheduled
# Every node's DaemonSets: aws-node (VPC CNI + network policy agent), kube-proxy, the pod identity agent, the EBS
# and EFS CSI node plugins (the EFS one requests nothing: a pod slot), node feature discovery's worker, a metrics agent.
DAEMONSET_CPU, DAEMONSET_MEMORY_GIB, DAEMONSET_PODS = 0.25, 0.5, 7

KARPENTER_REPLICAS, KARPENTER_CPU, KARPENTER_MEMORY_GIB = 2, 1.0, 1.0   # the Helm values CloudGpuCluster sets
GATEWAYS_PER_SITE = 2       # fleet + public (workloads/render/gateway.py; a site that is no entry has only fleet)
PROXY_REPLICAS, PROXY_CPU, PROXY_MEMORY_GIB = 2, 2.0, 2.0                # its EnvoyProxy's replicas and resources
# Containers Envoy Gateway and the AI gateway add to every proxy pod (shutdown manager, AI gateway ext_proc).
PROXY_SIDECAR_CPU, PROXY_SIDECAR_MEMORY_GIB = 0.3, 0.3
RATELIMIT_REDIS_CPU, RATELIMIT_REDIS_MEMORY_GIB = 0.5, 0.25    # the rate limiter's counter store (ratelimit_redis)
REDIS_REPLICAS = 2                                   # workloads' Redis: primary + replica (+ a Sentinel each)
REDIS_EXPORTER_CPU, REDIS_EXPORTER_MEMORY_GIB = 0.1, 0.125
FEAST_SERVER_CPU, FEAST_SERVER_MEMORY_GIB = 1.0, 2.0
FLINK_JOBMANAGER_CPU, FLINK_JOBMANAGER_MEMORY_GIB, FLINK_TASKMANAGER_MEMORY_GIB = 1.0, 2.0, 4.0
QDRANT_JOB_CPU, QDRANT_JOB_MEMORY_GIB = 0.1, 0.125   # the collection's one-shot set-up Job

CLUSTER_ADDONS = (
    PlatformPod("coredns", 0.1, 0.07, 2),                       # EKS add-on defaults
    PlatformPod("ebs-csi-controller", 0.06, 0.24, 2),           # 6 containers x 10m / 40Mi
    PlatformPod("efs-csi-controller", 0.03, 0.06, 2),           # model cache access points: 3 containers, no requests
                                                                # in the chart; 10m / 20Mi each of room
)
# Per operator of infra.versions.OPERATORS (the Helm release name): its pods. Chart defaults where the program
# sets no resources, rounded up.
CONTROLLER_PODS: dict[str, tuple[PlatformPod, ...]] = {
    "karpenter": (PlatformPod("karpenter", KARPENTER_CPU, KARPENTER_MEMORY_GIB, KARPENTER_REPLICAS, one_per_node=True),),
    "gpu-operator": (PlatformPod("gpu-operator", 0.2, 0.125), PlatformPod("nfd-master", 0.1, 0.125),
                     PlatformPod("nfd-gc", 0.01, 0.125)),
    "envoy-gateway": (PlatformPod("envoy-gateway", 0.1, 0.25), PlatformPod("envoy-ratelimit", 0.1, 0.5)),
    "ai-gateway-crds": (),
    "ai-gateway": (PlatformPod("ai-gateway-controller", 0.1, 0.25),),
    "keda": (PlatformPod("keda-operator", 0.1, 0.125), PlatformPod("keda-metrics-apiserver", 0.1, 0.125),
             PlatformPod("keda-admission-webhooks", 0.1, 0.125)),
    "kserve": (PlatformPod("kserve-controller-manager", 0.2, 0.6),),     # manager + kube-rbac-proxy
    "kserve-crd": (),
    "lws": (PlatformPod("lws-controller-manager", 0.5, 0.5),),
    "prometheus-operator": (PlatformPod("prometheus-operator", 0.1, 0.125), PlatformPod("kube-state-metrics", 0.1, 0.25),
                            PlatformPod("prometheus", 2.0, 8.0),        # the site's Prometheus server
                            PlatformPod("alertmanager", 0.1, 0.25), PlatformPod("grafana", 0.3, 0.625)),
    "feast-operator": (PlatformPod("feast-operator", 0.1, 0.25),),
    "flink-kubernetes-operator": (PlatformPod("flink-kubernetes-operator", 0.5, 1.0),),
    "gateway-api-inference-extension": (),
    "cert-manager": (PlatformPod("cert-manager", 0.05, 0.125), PlatformPod("cert-manager-webhook", 0.05, 0.125),
                     PlatformPod("cert-manager-cainjector", 0.05, 0.125)),
    "external-dns": (PlatformPod("external-dns", 0.05, 0.125),),
    "aws-load-balancer-controller": (PlatformPod("aws-load-balancer-controller", 0.1, 0.25, 2),),
    "kuberay-operator": (PlatformPod("kuberay-operator", 0.1, 0.5),),
}
UNKNOWN_CONTROLLER = (0.5, 0.5)     # an operator of OPERATORS not in the table above (a test asks for its row)


@dataclass(frozen=True)
class SystemPoolPlan:
    """The managed node group of a cloud site's platform: `nodes` of one instance type (its minimum and
    desired size; a rolling update surges to `max_nodes`), sized by first-fit decreasing of `pods`."""

    instance_type: str
    vcpus: int
    memory_gib: float
    max_pods: int
    nodes: int
    max_nodes: int
    packed_nodes: int               # what first-fit decreasing needed before the minimum and the spare
    pods: tuple[PlatformPod, ...]
    labels: dict[str, str] = field(default_factory=dict)
    hourly_usd: float = 0.0         # us-east-1 list price of `nodes`

    @property
    def room(self) -> tuple[float, float, int]:
        """What one node keeps for platform pods: cores, GiB, pods (the same rule as the plan's CPU nodes,
        less every node's DaemonSets)."""
        return node_room(self.vcpus, self.memory_gib, self.max_pods)

    @property
    def requested(self) -> tuple[float, float]:
        return (sum(p.cpu * p.replicas for p in self.pods), sum(p.memory_gib * p.replicas for p in self.pods))


def node_room(vcpus: float, memory_gib: float, max_pods: int) -> tuple[float, float, int]:
    return (vcpus * CLOUD_ALLOCATABLE - DAEMONSET_CPU, memory_gib * CLOUD_ALLOCATABLE - DAEMONSET_MEMORY_GIB,
            max_pods - DAEMONSET_PODS)


def controller_pods(name: str) -> tuple[PlatformPod, ...]:
    if name in CONTROLLER_PODS:
        return CONTROLLER_PODS[name]
    return (PlatformPod(name, *UNKNOWN_CONTROLLER),)


def data_store_pods(env: Environment, site_plan: SitePlan) -> list[PlatformPod]:
    """The pods of the data stores the plan puts at the site, as workloads renders them."""
    out: list[PlatformPod] = []
    for key in sorted(site_plan.data):
        kind, _, name = key.partition(":")
        if kind == "feature_view":
            v = next(f for f in env.feature_views if f.name == name)
            out.append(PlatformPod(f"redis-{name}", v.online_cpu + REDIS_EXPORTER_CPU + SENTINEL_CPU,
                                   v.online_memory_gib * 1.25 + 0.25 + REDIS_EXPORTER_MEMORY_GIB + SENTINEL_MEMORY_GIB,
                                   REDIS_REPLICAS))
            out.append(PlatformPod(f"sentinel-{name}", SENTINEL_CPU, SENTINEL_MEMORY_GIB))
            out.append(PlatformPod(f"feast-{name}", FEAST_SERVER_CPU, FEAST_SERVER_MEMORY_GIB))
            if v.streaming:
                out.append(PlatformPod(f"flink-jm-{name}", FLINK_JOBMANAGER_CPU, FLINK_JOBMANAGER_MEMORY_GIB))
                out.append(PlatformPod(f"flink-tm-{name}", max(1.0, v.online_cpu), FLINK_TASKMANAGER_MEMORY_GIB))
        elif kind == "collection":
            c = next(x for x in env.collections if x.name == name)
            out.append(PlatformPod(f"qdrant-{name}", c.cpu, c.memory_gib, c.replication_factor))
            out.append(PlatformPod(f"qdrant-setup-{name}", QDRANT_JOB_CPU, QDRANT_JOB_MEMORY_GIB))
    return out


def platform_pods(gpu_pools: bool, data: list[PlatformPod] | tuple[PlatformPod, ...] = ()) -> list[PlatformPod]:
    """Every pod of a cloud site's platform: add-ons, operators (the GPU operator only where GPU pools are),
    gateway proxies, and `data` (data_store_pods)."""
    pods = list(CLUSTER_ADDONS)
    for name in OPERATORS:
        if name != "gpu-operator" or gpu_pools:
            pods += controller_pods(name)
    pods.append(PlatformPod("envoy-proxy", PROXY_CPU + PROXY_SIDECAR_CPU, PROXY_MEMORY_GIB + PROXY_SIDECAR_MEMORY_GIB,
                            GATEWAYS_PER_SITE * PROXY_REPLICAS))
    pods.append(PlatformPod("ratelimit-redis", RATELIMIT_REDIS_CPU, RATELIMIT_REDIS_MEMORY_GIB))
    return pods + list(data)


def first_fit_decreasing(pods: list[PlatformPod] | tuple[PlatformPod, ...], room: tuple[float, float, int]) -> list[list[str]] | None:
    """Pods (by name) per node, first fit, the largest share of a node first; opens nodes as needed.
    None when a pod fits no node at all."""
    cpu, mem, slots = room
    if cpu <= 0 or mem <= 0 or slots <= 0:
        return None
    order = sorted(pods, key=lambda p: (-max(p.cpu / cpu, p.memory_gib / mem), p.name))
    nodes: list[list[float]] = []      # free cpu, free memory, free pod slots
    names: list[list[str]] = []
    for p in order:
        if p.cpu > cpu + 1e-9 or p.memory_gib > mem + 1e-9:
            return None
        for _ in range(p.replicas):
            for i, free in enumerate(nodes):
                if (free[0] >= p.cpu - 1e-9 and free[1] >= p.memory_gib - 1e-9 and free[2] >= 1
                        and not (p.one_per_node and p.name in names[i])):
                    break
            else:
                nodes.append([cpu, mem, slots])
                names.append([])
                i = len(nodes) - 1
            nodes[i] = [nodes[i][0] - p.cpu, nodes[i][1] - p.memory_gib, nodes[i][2] - 1]
            names[i].append(p.name)
    return names


def system_pool(site: CloudSite, pools: list[NodePoolPlan], data: list[PlatformPod] | tuple[PlatformPod, ...] = ()) -> SystemPoolPlan:
    """The system node group of a cloud site: the cheapest of SYSTEM_SHAPES whose nodes, first-fit decreasing,
    hold every platform pod (platform_pods), with at least MIN_SYSTEM_NODES and SPARE_SYSTEM_NODES more.
    Ties go to the smaller instance (more nodes: more zones, a smaller spare)."""
    pods = platform_pods(any(p.gpu_type for p in pools), data)
    best: SystemPoolPlan | None = None
    for shape in SYSTEM_SHAPES:
        packed = first_fit_decreasing(pods, node_room(shape.vcpus, shape.memory_gib, shape.max_pods))
        if packed is None:
            continue
        nodes = max(MIN_SYSTEM_NODES, len(packed)) + SPARE_SYSTEM_NODES
        plan = SystemPoolPlan(
            instance_type=shape.instance_type, vcpus=shape.vcpus, memory_gib=shape.memory_gib, max_pods=shape.max_pods,
            nodes=nodes, max_nodes=nodes + 1, packed_nodes=len(packed), pods=tuple(pods),
            labels={labels.NODE_ROLE: "system", labels.SITE: site.name, labels.SITE_KIND: "cloud",
                    labels.PRIVACY_ZONE: site_privacy_zone(site)},
            hourly_usd=round(nodes * shape.hourly_usd, 4))
        if best is None or (plan.hourly_usd, plan.vcpus) < (best.hourly_usd, best.vcpus):
            best = plan
    if best is None:
        big = max(pods, key=lambda p: max(p.cpu, p.memory_gib / 8))
        raise SpecError(None, [SpecIssue(("sites", site.name), f"platform pod {big.name} ({big.cpu:g} cores, "
                                         f"{big.memory_gib:g} GiB) fits no system node type (largest: {SYSTEM_SHAPES[-1].instance_type})")])
    return best


def system_pool_plan(env: Environment, site: CloudSite, site_plan: SitePlan) -> SystemPoolPlan:
    """system_pool for a site of a plan: its Karpenter pools and the data stores placed there."""
    return system_pool(site, node_pools(env, site, site_plan), data_store_pods(env, site_plan))


def batch_nodes_at(plan: PlacementPlan, site: str) -> dict[str, int]:
    """Instance type -> the new nodes the batch stage buys at a cloud site while runs go (on-demand and spot)."""
    out: dict[str, int] = {}
    for n in (plan.batch.nodes_at(site) if plan.batch else []):
        out[n.instance_type] = out.get(n.instance_type, 0) + n.nodes
    return out
