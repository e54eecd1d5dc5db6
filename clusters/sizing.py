"""Pure planners for the cluster components: subnets, Karpenter node pools, namespace quotas.

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
from policies.placement.plan import PlacementPlan, SitePlan

# Karpenter may grow a pool beyond the planned nodes by the pipelines' autoscaling factor,
# but never below this much room: a rolling update of the largest replica needs one spare node.
MIN_SPARE_NODES = 1
# Default root volume for GPU nodes: container images of LLM servers are 10-20 GiB and models are
# cached on local disk, so the 20 GiB default of the EKS AMIs is far too small.
GPU_ROOT_VOLUME_GIB = 300
CPU_ROOT_VOLUME_GIB = 100
# The system node group of each EKS cluster (Karpenter, CoreDNS, add-ons): standard-family vCPUs too.
SYSTEM_INSTANCE_TYPE = "m7i.large"
SYSTEM_INSTANCE_VCPUS = 2
SYSTEM_NODES = 2
# Per serving replica, room for what runs next to the model server (metrics/proxy sidecars).
SIDECAR_CPU = 0.25
SIDECAR_MEMORY_GIB = 0.5
SENTINEL_CPU, SENTINEL_MEMORY_GIB = 0.05, 0.0625   # per Sentinel container (workloads/render/feature_store.py)
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


def node_pools(env: Environment, site: CloudSite, site_plan: SitePlan) -> list[NodePoolPlan]:
    """Karpenter pools for one cloud site: one per GPU type the plan uses there, plus CPU if planned.

    Limits: each chosen instance type may grow from its planned count by the pipelines'
    autoscaling factor (+1 spare node for rolling updates), capped by the type's `max_nodes`;
    the pool's vCPU limit is then capped by its share of the family's vCPU quota (pools of
    one family share the quota in proportion to their planned vCPUs), never below the plan.
    """
    by_name = {it.name: it for it in site.instance_types}
    groups: dict[str | None, list[tuple[InstanceType, int]]] = {}
    for it_name, count in sorted(site_plan.nodes.items()):
        if count <= 0:
            continue
        it = by_name[it_name]
        groups.setdefault(it.gpu.type if it.gpu else None, []).append((it, count))

    grown: dict[str | None, list[tuple[InstanceType, int, int]]] = {}
    for gpu_type, members in groups.items():
        factor = _growth_factor(env, site_plan, gpu_type)
        rows = []
        for it, count in members:
            cap = it.max_nodes if it.max_nodes is not None else math.inf
            rows.append((it, count, int(min(cap, max(math.ceil(count * factor), count + MIN_SPARE_NODES)))))
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
